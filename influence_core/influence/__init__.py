"""Influence scores: the calculator, the blocked scoring grid and the executors it runs on."""
