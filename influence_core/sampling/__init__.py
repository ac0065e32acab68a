"""Hessian samplers (which training points estimate the curvature) and what they look at."""
