"""Numerically verified operations on the Poincaré ball, for PyTorch.

The functional API (:mod:`poincare.functional`) is re-exported here::

    import poincare
    d = poincare.dist(x, y, c=1.0)

Every op acts on the last dimension, broadcasts over the leading ones, takes the curvature
``c > 0`` keyword-only, and stays accurate (a few hyperbolic ULPs) up to the last representable
shell of the ball. :class:`PoincareBall` offers the same ops as methods of a module holding a
(possibly learnable) curvature, and :class:`upcast` raises the compute precision of every op in
its scope.
"""

from ._precision import current_upcast, upcast
from .functional import (
    check_point,
    conformal_factor,
    dist,
    dist0,
    egrad2rgrad,
    einstein_midpoint,
    expmap,
    expmap0,
    expmap0_add,
    expmap0_add_lorentz,
    gyration,
    klein_to_poincare,
    logmap,
    logmap0,
    lorentz_to_poincare,
    max_radius,
    mobius_add,
    mobius_matvec,
    mobius_scalar_mul,
    mobius_sub,
    pairwise_dist,
    poincare_to_klein,
    poincare_to_lorentz,
    project,
    transp,
    transp0,
)
from .manifold import PoincareBall

__version__ = "0.1.0"

__all__ = [
    "PoincareBall",
    "check_point",
    "conformal_factor",
    "current_upcast",
    "dist",
    "dist0",
    "egrad2rgrad",
    "einstein_midpoint",
    "expmap",
    "expmap0",
    "expmap0_add",
    "expmap0_add_lorentz",
    "gyration",
    "klein_to_poincare",
    "logmap",
    "logmap0",
    "lorentz_to_poincare",
    "max_radius",
    "mobius_add",
    "mobius_matvec",
    "mobius_scalar_mul",
    "mobius_sub",
    "pairwise_dist",
    "poincare_to_klein",
    "poincare_to_lorentz",
    "project",
    "transp",
    "transp0",
    "upcast",
]
