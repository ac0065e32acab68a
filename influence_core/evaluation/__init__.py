"""Ground truths and measures: metrics, leave-one-out, the linear datamodeling score, peak memory."""
