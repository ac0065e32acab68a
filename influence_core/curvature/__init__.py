"""Curvature: the training objective of the flat parameter vector and its derivatives (torch.func)."""
