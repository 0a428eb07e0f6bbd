"""High-precision references, error metrics and Hypothesis strategies that check :mod:`poincare`."""
