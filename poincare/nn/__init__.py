"""Hyperbolic neural-network modules on the Poincaré ball (work in progress of the move)."""
