"""What the predictions' distance from the origin says: radius by horizon and by ambiguity.

The claim under test (hyperfuture's, which this model carries on): a model trained to predict
the future in hyperbolic space puts an uncertain future close to the origin, as an abstract
prediction, and a certain one far out, as a specific one. The distance from the origin of a
prediction then measures how predictable its future is. Two measurements test it:

* **radius by horizon**: the mean and the spread of the predictions' radius for each future
  step ``k = 1 .. pred_step``; further ahead should mean less predictable, hence closer to the
  origin;
* **radius by ambiguity**: on the sprite videos, a video's fine action starts at its reveal
  frame (:mod:`training.data`). A prediction made from an observed past that ends before the
  reveal frame (*hidden*: the past cannot tell the three fine actions apart, and the future
  depends on which one it is) against one whose past already shows the fine action
  (*revealed*); also per coarse action.

The radius of a hyperbolic prediction ``p`` is ``dist0(p) = (2/√c) artanh(√c |p|)``; for the
Euclidean model (the control) it is the norm ``|p|``. Each video contributes the mean radius
over the ``h × w`` locations of its feature map at each step, so a video is the unit that the
confidence intervals resample: a percentile bootstrap over videos (``resamples`` draws, 95 %
by default; for a difference of two groups each group is resampled on its own).

The evaluation set is the sprite data's ``test`` split (``(seed, "test", epoch 0)``), which
neither training nor validation reads; on real video (no reveal frames) only the radius by
horizon is measured, on the validation clips.

:func:`evaluate_run` writes ``eval.json``, ``radius_by_horizon.png``,
``radius_by_ambiguity.png`` and ``poincare_disk.png`` into a run folder and returns the report;
:func:`format_summary` is the one-paragraph summary that ``train_cli.py`` prints.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import poincare
from models.video import VideoFuturePredictor
from poincare._optional import optional_imports
from training.checkpoint import atomic_write_bytes, atomic_write_text
from training.data import COARSE_ACTIONS, SpriteBatch

__all__ = [
    "PredictionSet",
    "bootstrap_ci",
    "bootstrap_difference_ci",
    "collect_predictions",
    "disk_projection",
    "evaluate_run",
    "format_summary",
    "model_title",
    "observed_frames",
    "radius_report",
]

EVAL_FILE = "eval.json"
HORIZON_PNG = "radius_by_horizon.png"
AMBIGUITY_PNG = "radius_by_ambiguity.png"
DISK_PNG = "poincare_disk.png"


def observed_frames(num_seq: int, seq_len: int, pred_step: int) -> int:
    """Frames of the observed past: the first ``num_seq - pred_step`` blocks of ``seq_len``."""
    return (num_seq - pred_step) * seq_len


@dataclass
class PredictionSet:
    """The predictions of an evaluation set, per video.

    Attributes:
        radius: ``(V, P)`` float64: each video's mean radius of its predictions over the
            feature map's locations, per future step (``dist0`` in the ball, or the norm).
        spread: ``(V, P)`` float64: the standard deviation of those radii over the locations.
        target_radius: ``(V, P)`` float64: the same for the encoded future blocks.
        pooled_pred: ``(V, P, D)``: each video's predictions at a step pooled over the
            locations (Einstein midpoint in the ball, mean for the Euclidean model).
        pooled_target: ``(V, P, D)``: the same for the targets.
        coarse: ``(V,)`` int64 coarse action, or ``None`` (real video).
        hidden: ``(V,)`` bool: the reveal frame is not in the observed past, or ``None``.
        hyperbolic: whether the radii are hyperbolic (``dist0``) or Euclidean norms.
        c: the curvature of the ball.
    """

    radius: Tensor
    spread: Tensor
    target_radius: Tensor
    pooled_pred: Tensor
    pooled_target: Tensor
    coarse: Tensor | None
    hidden: Tensor | None
    hyperbolic: bool
    c: float

    @property
    def measure(self) -> str:
        """``"dist0"`` or ``"norm"``: what :attr:`radius` measures."""
        return "dist0" if self.hyperbolic else "norm"


def _radius(x: Tensor, *, hyperbolic: bool, c: float) -> Tensor:
    if hyperbolic:
        return poincare.dist0(x, c=c)
    norm: Tensor = torch.linalg.vector_norm(x, dim=-1)
    return norm


@torch.no_grad()
def collect_predictions(
    model: VideoFuturePredictor,
    batches: Iterable[SpriteBatch],
    *,
    device: torch.device,
    observed: int | None = None,
) -> PredictionSet:
    """Run ``model`` (in eval mode, restored afterwards) on ``batches`` and keep, per video and
    future step, the statistics of :class:`PredictionSet`.

    ``observed``: the number of observed frames (:func:`observed_frames`); with it, batches
    whose ``reveal`` is a tensor give :attr:`PredictionSet.hidden` (``reveal >= observed``) and
    the coarse labels. Real-video batches (``reveal`` of another kind) give ``None`` there.
    Non-finite predictions (a diverged model) stay in as NaN: the report then shows NaN.

    Raises:
        ValueError: no batches.
    """
    was_training = model.training
    model.eval()
    c = float(model.ball.c.detach())
    radius, spread, t_radius, p_pool, t_pool = [], [], [], [], []
    coarse: list[Tensor] = []
    hidden: list[Tensor] = []
    labelled = observed is not None
    try:
        for batch in batches:
            pred, target = model(batch.video.to(device))  # (B, P, h, w, D)
            b, p = pred.shape[:2]
            pred = pred.reshape(b, p, -1, pred.shape[-1]).to(torch.float64)
            target = target.reshape(b, p, -1, target.shape[-1]).to(torch.float64)
            r = _radius(pred, hyperbolic=model.hyperbolic, c=c)  # (B, P, L)
            radius.append(r.mean(-1).cpu())
            spread.append(r.std(-1, correction=0).cpu())
            t_radius.append(_radius(target, hyperbolic=model.hyperbolic, c=c).mean(-1).cpu())
            if model.hyperbolic:
                p_pool.append(poincare.einstein_midpoint(pred, c=c, dim=-2).cpu())
                t_pool.append(poincare.einstein_midpoint(target, c=c, dim=-2).cpu())
            else:
                p_pool.append(pred.mean(-2).cpu())
                t_pool.append(target.mean(-2).cpu())
            if labelled and isinstance(batch.reveal, Tensor):
                assert observed is not None
                coarse.append(batch.coarse.reshape(-1).cpu())
                hidden.append(batch.reveal.reshape(-1).cpu() >= observed)
            else:
                labelled = False
    finally:
        model.train(was_training)
    if not radius:
        raise ValueError("collect_predictions needs at least one batch")
    return PredictionSet(
        radius=torch.cat(radius),
        spread=torch.cat(spread),
        target_radius=torch.cat(t_radius),
        pooled_pred=torch.cat(p_pool),
        pooled_target=torch.cat(t_pool),
        coarse=torch.cat(coarse) if labelled else None,
        hidden=torch.cat(hidden) if labelled else None,
        hyperbolic=model.hyperbolic,
        c=c,
    )


def bootstrap_ci(
    values: Tensor, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values (V,)`` (videos drawn with
    replacement, ``resamples`` times, from a generator seeded with ``seed``).

    Returns ``(nan, nan)`` for an empty ``values``; a single value gives ``(v, v)``.

    Raises:
        ValueError: ``values`` not one-dimensional, ``resamples < 1`` or ``level`` outside
            ``(0, 1)``.
    """
    _check_bootstrap(resamples, level, values=values)
    n = values.numel()
    if n == 0:
        return math.nan, math.nan
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=g)
    return _percentiles(values.to(torch.float64)[idx].mean(dim=1), level)


def bootstrap_difference_ci(
    a: Tensor, b: Tensor, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)``, each group resampled on its own.

    Returns ``(nan, nan)`` when either group is empty. Raises as :func:`bootstrap_ci`.
    """
    _check_bootstrap(resamples, level, a=a, b=b)
    if a.numel() == 0 or b.numel() == 0:
        return math.nan, math.nan
    g = torch.Generator().manual_seed(seed)
    ia = torch.randint(0, a.numel(), (resamples, a.numel()), generator=g)
    ib = torch.randint(0, b.numel(), (resamples, b.numel()), generator=g)
    diff = a.to(torch.float64)[ia].mean(1) - b.to(torch.float64)[ib].mean(1)
    return _percentiles(diff, level)


def _check_bootstrap(resamples: int, level: float, **samples: Tensor) -> None:
    """The argument checks shared by the bootstrap functions (see :func:`bootstrap_ci`)."""
    for name, v in samples.items():
        if v.dim() != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {tuple(v.shape)}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _percentiles(draws: Tensor, level: float) -> tuple[float, float]:
    """The central ``level`` interval of the bootstrap ``draws``."""
    alpha = (1.0 - level) / 2.0
    lo, hi = torch.quantile(draws, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
    return float(lo), float(hi)


def _group(values: Tensor, *, resamples: int, seed: int) -> dict[str, Any]:
    lo, hi = bootstrap_ci(values, resamples=resamples, seed=seed)
    mean = float(values.mean()) if values.numel() else math.nan
    return {"mean": mean, "ci95": [lo, hi], "videos": int(values.numel())}


def _split(radius: Tensor, hidden: Tensor, *, resamples: int, seed: int) -> dict[str, Any]:
    """Hidden against revealed for the per-video radii ``radius (V,)``."""
    h, r = radius[hidden], radius[~hidden]
    lo, hi = bootstrap_difference_ci(h, r, resamples=resamples, seed=seed)
    diff = float(h.mean() - r.mean()) if h.numel() and r.numel() else math.nan
    return {
        "hidden": _group(h, resamples=resamples, seed=seed),
        "revealed": _group(r, resamples=resamples, seed=seed),
        "hidden_minus_revealed": {"mean": diff, "ci95": [lo, hi]},
    }


def radius_report(ps: PredictionSet, *, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The radius-by-horizon and radius-by-ambiguity figures of ``ps`` as a JSON-ready dict.

    ``horizon``: one entry per future step ``k`` (1-based): the mean per-video radius with its
    bootstrap 95 % interval, the mean spread over locations, the standard deviation over
    videos, and the targets' mean radius. With labels, ``ambiguity``: per step, the hidden
    and revealed groups (mean, interval, number of videos) and their difference with its
    interval; ``by_coarse``: the same per coarse action. Also ``horizon_drop``: the mean of
    step 1 minus the last step with its interval (videos resampled in pairs).
    """
    steps = ps.radius.shape[1]
    horizon = []
    for k in range(steps):
        r = ps.radius[:, k]
        g = _group(r, resamples=resamples, seed=seed + k)
        horizon.append(
            {
                "step": k + 1,
                **g,
                "std_over_videos": float(r.std(correction=0)),
                "spread_over_locations": float(ps.spread[:, k].mean()),
                "target_mean": float(ps.target_radius[:, k].mean()),
            }
        )
    drop = ps.radius[:, 0] - ps.radius[:, -1]
    report: dict[str, Any] = {
        "measure": ps.measure,
        "curvature": ps.c,
        "videos": int(ps.radius.shape[0]),
        "horizon": horizon,
        "horizon_drop": {
            "mean": float(drop.mean()),
            "ci95": list(bootstrap_ci(drop, resamples=resamples, seed=seed)),
        },
    }
    if ps.hidden is not None and ps.coarse is not None:
        report["hidden_share"] = float(ps.hidden.double().mean())
        report["ambiguity"] = [
            {"step": k + 1, **_split(ps.radius[:, k], ps.hidden, resamples=resamples, seed=seed)}
            for k in range(steps)
        ]
        by_coarse: dict[str, list[dict[str, Any]]] = {}
        for i, name in enumerate(COARSE_ACTIONS):
            sel = ps.coarse == i
            by_coarse[name] = [
                {
                    "step": k + 1,
                    **_split(ps.radius[sel, k], ps.hidden[sel], resamples=resamples, seed=seed),
                }
                for k in range(steps)
            ]
        report["by_coarse"] = by_coarse
    return report


def disk_projection(x: Tensor, *, c: float, basis: Tensor | None = None) -> Tensor:
    """Project points ``x (N, D)`` of the ball of curvature ``-c`` to the 2-D disk, keeping
    each point's distance from the origin exactly.

    ``v = logmap0(x)``; ``u = v @ basis`` with ``basis (D, 2)`` the two leading principal
    directions of the ``v`` (computed here when not given, uncentred, so the origin stays the
    origin); the 2-D tangent vector ``|v| · u / |u|`` (``u = 0`` keeps the first axis) is
    mapped back with ``expmap0`` in the 2-D disk. So ``dist0`` is preserved and the angles are
    those of the principal plane. For ``D == 2`` with no basis the points come back unchanged
    (up to rounding).

    Raises:
        ValueError: ``x`` not ``(N, D)`` with ``D >= 2``, or ``basis`` not ``(D, 2)``.
    """
    if x.dim() != 2 or x.shape[1] < 2:
        raise ValueError(f"x must have shape (N, D) with D >= 2, got {tuple(x.shape)}")
    v = poincare.logmap0(x.to(torch.float64), c=c)
    if basis is None:
        if x.shape[1] == 2:
            basis = torch.eye(2, dtype=torch.float64)
        else:
            _, _, vh = torch.linalg.svd(v, full_matrices=False)
            basis = vh[:2].T
    if basis.shape != (x.shape[1], 2):
        raise ValueError(f"basis must have shape ({x.shape[1]}, 2), got {tuple(basis.shape)}")
    u = v @ basis.to(torch.float64)
    norm_u = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
    first = torch.tensor([1.0, 0.0], dtype=torch.float64).expand_as(u)
    direction = torch.where(norm_u > 0, u / norm_u.clamp_min(1e-300), first)
    v2 = direction * torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    return poincare.expmap0(v2, c=c)


def _figure_bytes(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    with optional_imports("matplotlib", extra="train", purpose="the evaluation plots"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    return plt


def plot_horizon(report: dict[str, Any], title: str) -> bytes:
    """A bar chart of the mean radius per future step with its 95 % interval (PNG bytes)."""
    plt = _pyplot()
    h = report["horizon"]
    steps = [e["step"] for e in h]
    means = [e["mean"] for e in h]
    err = [[e["mean"] - e["ci95"][0] for e in h], [e["ci95"][1] - e["mean"] for e in h]]
    fig, ax = plt.subplots(figsize=(4.2, 3.2), dpi=90)
    ax.bar(steps, means, yerr=err, capsize=4, color="#4c72b0")
    ax.set_xticks(steps)
    ax.set_xlabel("future step")
    ax.set_ylabel(f"mean {report['measure']} of predictions")
    ax.set_title(title, fontsize=9)
    lo = min(e["ci95"][0] for e in h)
    hi = max(e["ci95"][1] for e in h)
    if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
        pad = 0.5 * (hi - lo) + 1e-9
        ax.set_ylim(max(0.0, lo - pad), hi + pad)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _figure_bytes(fig)


def plot_ambiguity(report: dict[str, Any], title: str) -> bytes:
    """Bars of the mean radius of hidden against revealed predictions per step, for all videos
    and per coarse action, with 95 % intervals (PNG bytes)."""
    plt = _pyplot()
    panels = [("all", report["ambiguity"]), *report["by_coarse"].items()]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2), dpi=90, sharey=True)
    for ax, (name, entries) in zip(axes, panels, strict=True):
        for j, (group, colour) in enumerate((("hidden", "#dd8452"), ("revealed", "#4c72b0"))):
            xs = [e["step"] + (j - 0.5) * 0.38 for e in entries]
            m = [e[group]["mean"] for e in entries]
            err = [
                [max(0.0, e[group]["mean"] - e[group]["ci95"][0]) for e in entries],
                [max(0.0, e[group]["ci95"][1] - e[group]["mean"]) for e in entries],
            ]
            ax.bar(xs, m, width=0.38, yerr=err, capsize=3, color=colour, label=group)
        ax.set_xticks([e["step"] for e in entries])
        ax.set_xlabel("future step")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("mean " + report["measure"] + " of predictions")
    axes[0].legend(fontsize=7, title="fine action", title_fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _figure_bytes(fig)


def plot_disk(ps: PredictionSet, title: str, *, max_points: int = 400) -> bytes:
    """The pooled predictions on the Poincaré disk (:func:`disk_projection`, one principal
    plane for all), in up to three panels: coloured by future step (with the step-1 targets as
    crosses), by coarse action, and by whether the fine action was hidden in the observed
    past. Distances from the centre are the predictions' own. For the Euclidean model the
    vectors are first mapped into the ball by ``expmap0`` (PNG bytes)."""
    plt = _pyplot()
    v, p, d = ps.pooled_pred.shape
    n = min(v, max_points)
    pred = ps.pooled_pred[:n].reshape(-1, d)
    target = ps.pooled_target[:n, 0]  # the targets of the first step
    if not ps.hyperbolic:
        pred = poincare.expmap0(pred, c=ps.c)
        target = poincare.expmap0(target, c=ps.c)
    v_all = poincare.logmap0(torch.cat([pred, target]).to(torch.float64), c=ps.c)
    _, _, vh = torch.linalg.svd(v_all, full_matrices=False)
    basis = vh[:2].T
    p2 = disk_projection(pred, c=ps.c, basis=basis).reshape(n, p, 2)
    t2 = disk_projection(target, c=ps.c, basis=basis)
    step = torch.arange(p).expand(n, p)
    panels: list[tuple[str, Tensor, list[str]]] = [
        ("future step", step, [f"step {k + 1}" for k in range(p)])
    ]
    if ps.coarse is not None:
        panels.append(("coarse action", ps.coarse[:n, None].expand(n, p), list(COARSE_ACTIONS)))
    if ps.hidden is not None:
        panels.append(
            (
                "fine action in the observed past",
                ps.hidden[:n, None].expand(n, p).long(),
                ["revealed", "hidden"],
            )
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 4.3), dpi=90)
    axes = list(axes) if len(panels) > 1 else [axes]
    radius = 1.0 / math.sqrt(ps.c)
    colours = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
    pts = p2.reshape(-1, 2)
    for idx, (ax, (name, labels, names)) in enumerate(zip(axes, panels, strict=True)):
        ax.add_patch(plt.Circle((0, 0), radius, fill=False, color="k", lw=0.8))
        ax.plot([0], [0], "k+", ms=6)
        lab = labels.reshape(-1)
        for i, label in enumerate(names):
            sel = lab == i
            ax.scatter(
                pts[sel, 0], pts[sel, 1], s=7, alpha=0.5, color=colours[i % 5], lw=0, label=label
            )
        if idx == 0:
            ax.scatter(
                t2[:, 0],
                t2[:, 1],
                s=7,
                marker="x",
                alpha=0.3,
                color="k",
                lw=0.5,
                label="target, step 1",
            )
        ax.legend(fontsize=6, loc="lower left", markerscale=2)
        ax.set_xlim(-1.05 * radius, 1.05 * radius)
        ax.set_ylim(-1.05 * radius, 1.05 * radius)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(name, fontsize=9)
    fig.suptitle(
        f"{title}: each video's prediction pooled over locations (Einstein midpoint), on the "
        "disk\nwith its distance from the centre preserved",
        fontsize=8,
    )
    fig.tight_layout()
    return _figure_bytes(fig)


def model_title(model: VideoFuturePredictor) -> str:
    """The model's kind in words, for plot titles ("hyperbolic transformer", ...)."""
    if not model.hyperbolic:
        return "Euclidean ConvGRU"
    if not model.use_transformer:
        return "hyperbolic ConvGRU"
    return "hyperbolic space-time transformer" if model.space_time else "hyperbolic transformer"


def evaluate_run(
    model: VideoFuturePredictor,
    batches: Iterable[SpriteBatch],
    out_dir: str | os.PathLike[str],
    *,
    device: torch.device,
    observed: int | None,
    meta: dict[str, Any],
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], PredictionSet, list[str]]:
    """Collect the predictions of ``batches``, compute :func:`radius_report`, and write
    ``eval.json`` (the report plus ``meta``) and the PNGs into ``out_dir``, atomically.

    Returns ``(report, predictions, names)``, ``names`` the PNG files written.
    """
    ps = collect_predictions(model, batches, device=device, observed=observed)
    report = {**meta, **radius_report(ps, resamples=resamples, seed=seed)}
    out = Path(out_dir)
    title = f"{model_title(model)}, {report['videos']} videos"
    pngs = {HORIZON_PNG: plot_horizon(report, title)}
    if "ambiguity" in report:
        pngs[AMBIGUITY_PNG] = plot_ambiguity(report, title)
    pngs[DISK_PNG] = plot_disk(ps, title)
    for name, data in pngs.items():
        atomic_write_bytes(out / name, data)
    atomic_write_text(out / EVAL_FILE, json.dumps(report, indent=1) + "\n")
    return report, ps, list(pngs)


def _interval(e: dict[str, Any]) -> str:
    lo, hi = e["ci95"]
    return f"{e['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def format_summary(report: dict[str, Any]) -> str:
    """A few lines: radius per step and, with labels, hidden minus revealed per step."""
    measure = report["measure"]
    lines = [
        f"eval on {report['videos']} videos ({measure} of the predictions, mean [95% interval]): "
        + ", ".join(f"step {e['step']} {_interval(e)}" for e in report["horizon"])
        + (
            f"; step 1 minus step {len(report['horizon'])}: {_interval(report['horizon_drop'])}"
            if len(report["horizon"]) > 1
            else ""
        )
    ]
    share = report.get("hidden_share")
    if share is not None and share in (0.0, 1.0):
        which = "hidden in" if share == 1.0 else "revealed by"
        lines.append(
            f"  the fine action is {which} the observed past of every video (no comparison; "
            "a shorter past, e.g. a larger --pred_step, hides it in some)"
        )
    elif share is not None:
        lines.append(
            f"  fine action hidden in the past ({100 * report['hidden_share']:.0f}% of videos) "
            "minus revealed: "
            + ", ".join(
                f"step {e['step']} {_interval(e['hidden_minus_revealed'])}"
                for e in report["ambiguity"]
            )
        )
    return "\n".join(lines)
