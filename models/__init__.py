"""Hyperbolic neural network modules built on :mod:`poincare`."""
