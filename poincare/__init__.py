"""Numerically verified operations on the Poincaré ball."""
