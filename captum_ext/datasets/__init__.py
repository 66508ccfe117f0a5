"""Benchmark ground: ellipse regression datasets and digit scenes with exact ground truth."""
