"""Data: datasets (loading, checks) and data sources (arrays, torch Datasets, DataLoaders)."""
