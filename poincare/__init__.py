"""Numerically verified operations on the Poincaré ball, for PyTorch.

The functional API (:mod:`poincare.functional`) is re-exported here::

    import poincare
    d = poincare.dist(x, y, c=1.0)

Every op acts on the last dimension, broadcasts over the leading ones, takes the curvature
``c > 0`` keyword-only, and stays accurate (a few hyperbolic ULPs) up to the last representable
shell of the ball. :class:`PoincareBall` offers the same ops as methods of a module holding a
(possibly learnable) curvature, and :class:`upcast` raises the compute precision of every op in
its scope (:func:`compute_dtype` tells the dtype an op computes in: the one precision policy,
read by the modules of :mod:`poincare.nn` too). The modules (linear, layer norm, attention,
transformer, ...) live in :mod:`poincare.nn`.
"""

from ._checks import branch_free, curvature_range
from ._precision import compute_dtype, current_upcast, upcast
from .distributions import WrappedNormal
from .functional import (
    check_point,
    conformal_factor,
    dist,
    dist0,
    dist2plane,
    egrad2rgrad,
    einstein_midpoint,
    expmap,
    expmap0,
    expmap0_add,
    expmap0_add_lorentz,
    frechet_mean,
    geodesic,
    geodesic_unit,
    gyration,
    klein_to_poincare,
    logmap,
    logmap0,
    lorentz_to_poincare,
    max_radius,
    mobius_add,
    mobius_fn_apply,
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
    "WrappedNormal",
    "branch_free",
    "check_point",
    "compute_dtype",
    "conformal_factor",
    "current_upcast",
    "curvature_range",
    "dist",
    "dist0",
    "dist2plane",
    "egrad2rgrad",
    "einstein_midpoint",
    "expmap",
    "expmap0",
    "expmap0_add",
    "expmap0_add_lorentz",
    "frechet_mean",
    "geodesic",
    "geodesic_unit",
    "gyration",
    "klein_to_poincare",
    "logmap",
    "logmap0",
    "lorentz_to_poincare",
    "max_radius",
    "mobius_add",
    "mobius_fn_apply",
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
