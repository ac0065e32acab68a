"""Models: the architecture zoo, training (Adam + L-BFGS polish), and the task seam (output, loss)."""
