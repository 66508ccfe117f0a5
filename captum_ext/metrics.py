"""Localisation and saliency metrics (pure tensor functions)."""
