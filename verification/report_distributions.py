"""Accuracy-report rows of :mod:`poincare.distributions`, in the form of
:mod:`verification.report`'s rows (:data:`SPECS`, to be merged into its ``OPS``).

``wrapnorm_log_prob`` calls ``WrappedNormal(loc, scale, c=c).log_prob(x)`` on a mean
``loc`` drawn within the band, a point ``x`` that is ``loc`` itself, a few float steps from it or
an independent point of the band (:meth:`verification.report.Drawer.partner`), and a scale drawn
log-uniformly in ``[0.05, 20] / sqrt(c)``, isotropic (one value) or diagonal (``D`` values) with
equal odds. The output is a scalar scored against the mpmath density
(:func:`verification.reference_distributions.log_prob`) by :func:`log_prob_error`: the relative
error in units of one rounding of each term of the log-density plus what one float step of each
input moves the exact value by.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import mpmath
import torch

from poincare.distributions import WrappedNormal
from verification import metrics
from verification import reference as ref
from verification import reference_distributions as refd
from verification.report import OPS, Drawer, OpSpec, Sample

__all__ = ["SCALE_RANGE", "SPECS", "draw_wrapped_normal_log_prob", "log_prob_error"]

SCALE_RANGE = (0.05, 20.0)
"""Range of the drawn scales, in units of the curvature radius ``1/sqrt(c)``."""


def log_prob_error(
    p: Any,
    x: Sequence[Any],
    loc: Sequence[Any],
    scale: Sequence[Any],
    c: Any,
    dtype: torch.dtype,
) -> float:
    """Error of a computed log-density ``p`` at ``x`` of ``WrappedNormal(loc, scale, c=c)``:

    ``|p - e| / (eps·M + L_x·h(x) + L_loc·h(loc) + eps·S)``

    with ``e`` the exact value, ``M`` the sum of the magnitudes of its four terms
    (:func:`verification.reference_distributions.log_prob_terms`: the rounding of each term;
    it is at least ``D/2 log 2π``, so values near 0 are scored absolutely), ``h(q) =
    hulp(q)/sqrt(c)`` the hyperbolic length of one float step at a point (in the units of the
    distance), ``L_x``, ``L_loc`` and ``S`` the sensitivities of
    :func:`verification.reference_distributions.log_prob_sensitivity` (one float step of a scale
    is a relative change ``eps``). ``inf`` if ``p`` is not finite.
    """
    with mpmath.workdps(ref.DPS):
        pp = mpmath.mpf(p)
        if not mpmath.isfinite(pp):
            return math.inf
        cc = mpmath.mpf(c)
        eps = metrics.machine_eps(dtype)
        exact = refd.log_prob(x, loc, scale, cc)
        size = mpmath.fsum(abs(t) for t in refd.log_prob_terms(x, loc, scale, cc))
        lx, lloc, s_term = refd.log_prob_sensitivity(x, loc, scale, cc)
        sc = mpmath.sqrt(cc)
        hx = metrics.hulp(x, cc, dtype) / sc
        hloc = metrics.hulp(loc, cc, dtype) / sc
        allowance = eps * size + lx * hx + lloc * hloc + eps * s_term
        diff = abs(pp - exact)
        if diff == 0:
            return 0.0
        return float(diff / allowance)


def _scale(d: Drawer) -> list[float]:
    n = 1 if d.rng.random() < 0.5 else d.dim
    lo, hi = (math.log(v / math.sqrt(d.c)) for v in SCALE_RANGE)
    return [d.rnd(math.exp(d.rng.uniform(lo, hi))) for _ in range(n)]


def draw_wrapped_normal_log_prob(d: Drawer) -> Sample | None:
    """Inputs ``[x, loc, scale]`` of ``WrappedNormal(loc, scale).log_prob(x)``."""
    loc = d.point()
    x = d.partner(loc)
    scale = _scale(d)

    def score(out: torch.Tensor) -> tuple[float, bool]:
        p = ref.to_mp(out.reshape(()))
        return log_prob_error(p, x, loc, scale, d.mc, d.dtype), True

    return Sample(
        [d.tensor(x), d.tensor(loc), d.tensor(scale)],
        score,
        lambda a: refd.log_prob(a[0], a[1], a[2], d.mc),
    )


def _call_log_prob(args: list[torch.Tensor], c: float) -> torch.Tensor:
    x, loc, scale = args
    return WrappedNormal(loc, scale, c=c, validate_args=False).log_prob(x).reshape(1)


SPECS: list[OpSpec] = [
    OpSpec("wrapnorm_log_prob", draw_wrapped_normal_log_prob, _call_log_prob),
]
"""The rows of this module, for :data:`verification.report.OPS`."""

OPS.update({spec.name: spec for spec in SPECS})
