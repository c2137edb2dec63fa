"""Evaluation: metrics (defined once, in metrics.py) and the runner behind `kb eval`."""
