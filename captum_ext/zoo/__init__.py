"""Small reference networks trained on the benchmark scenes, and the EfficientNet-Lite0 loader."""
