"""Evaluate: test metrics and plots of a trained model."""
