"""Early action recognition: probes on the frozen model's representations.

The sprite videos carry a two-level label (:mod:`training.data`): a coarse action (3 classes)
and a fine action of it (3 per coarse action, 9 in all), the fine one acting only from the
video's reveal frame on. A frozen model is read after each number of observed blocks
``k = 1 .. num_seq - pred_step`` (its aggregator is causal, so the state after ``k`` blocks
is the state of a past of ``k`` blocks), and two representations are pooled over the feature
map's locations:

* ``context``: the aggregator's state after ``k`` blocks (the transformer's output, points
  of the ball; the ConvGRU's hidden state, mapped into the ball by ``expmap0`` for the
  hyperbolic model);
* ``prediction``: the first prediction made from that past (the predictor applied to the
  state, then the model's map into its space).

Each representation is pooled over the ``h × w`` locations: the Einstein midpoint in the
ball, the mean for the Euclidean model. (A probe on every location, multinomial logistic
regression on the product of the locations' balls, did no better on the default run's
checkpoint: lower on the coarse action at every ``k``, at most 2.7 points higher on the fine
one, at about 20 times the cost.) A probe is trained for each
representation, each ``k`` and each level (coarse, fine): a
:class:`poincare.nn.HyperbolicMLR` on the ball points of the hyperbolic models, a
:class:`torch.nn.Linear` on the Euclidean model's vectors. Probes train full-batch with Adam on
videos of the sprite ``train`` split at an epoch that training never reaches (``PROBE_EPOCH``)
and are scored on the ``test`` split.

Scores: accuracy per level; and hyperfuture's hierarchical accuracy of the fine probe, which
gives a wrong fine label of the right coarse action half credit: ``1`` for the right fine
label, ``0.5`` for a wrong one under the right coarse action, ``0`` otherwise (chance
``1/9 + 0.5 · 2/9 = 2/9``).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import poincare
from models.convgru import ConvGRU
from models.video import VideoFuturePredictor
from poincare.nn import ConvHyperbolicTransformer, HyperbolicMLR
from training.analysis import _pyplot
from training.checkpoint import atomic_write_bytes, atomic_write_text
from training.data import FINE_ACTIONS, SpriteBatch

__all__ = [
    "PROBE_EPOCH",
    "Features",
    "extract_features",
    "format_probe_table",
    "hierarchical_accuracy",
    "run_probes",
    "train_probe",
]

PROBE_EPOCH = 1_000_000
"""The epoch of the sprite ``train`` split whose videos train the probes (never trained on)."""

PROBE_FILE = "probe.json"
PROBE_PNG = "probe.png"
REPRESENTATIONS = ("context", "prediction")
NUM_FINE = sum(len(f) for f in FINE_ACTIONS)


@dataclass
class Features:
    """Pooled representations of videos after each number of observed blocks.

    Attributes:
        context: ``(V, K, D)``: the aggregator's state after ``k = 1 .. K`` blocks.
        prediction: ``(V, K, D)``: the first prediction from a past of ``k`` blocks.
        coarse: ``(V,)`` coarse labels in ``[0, 3)``.
        fine: ``(V,)`` fine labels in ``[0, 9)`` (``3 * coarse + fine action``).
        hyperbolic: the representations are ball points (else Euclidean vectors).
        c: the curvature of the ball.
    """

    context: Tensor
    prediction: Tensor
    coarse: Tensor
    fine: Tensor
    hyperbolic: bool
    c: float


def _pool(x: Tensor, *, hyperbolic: bool, c: float) -> Tensor:
    """``(B, K, D, h, w)`` -> ``(B, K, D)``: Einstein midpoint (ball) or mean over locations."""
    flat = x.flatten(3).transpose(-1, -2)  # (B, K, hw, D)
    if hyperbolic:
        return poincare.einstein_midpoint(flat, c=c, dim=-2)
    return flat.mean(-2)


def _states(model: VideoFuturePredictor, z_ctx: Tensor) -> Tensor:
    """The aggregator's state after each of the ``K`` observed blocks, ``(B, K, D, h, w)``:
    tangent vectors at the origin (transformer) or the ConvGRU's hidden states."""
    agg = model.aggregator
    if isinstance(agg, ConvHyperbolicTransformer):
        out, _ = agg.forward_tangent(z_ctx)
        return out
    assert isinstance(agg, ConvGRU)
    hidden: list[Tensor] | None = None
    states = []
    for t in range(z_ctx.shape[1]):
        hidden = agg.step(z_ctx[:, t], hidden)
        states.append(hidden[-1])
    return torch.stack(states, dim=1)


@torch.no_grad()
def extract_features(
    model: VideoFuturePredictor, batches: Iterable[SpriteBatch], *, device: torch.device
) -> Features:
    """Run the frozen ``model`` (eval mode, restored afterwards) on sprite ``batches`` and keep
    its pooled context and prediction representations after each number of observed blocks.

    Raises:
        ValueError: no batches.
    """
    was_training = model.training
    model.eval()
    c = float(model.ball.c.detach())
    ctx_all: list[Tensor] = []
    pred_all: list[Tensor] = []
    coarse: list[Tensor] = []
    fine: list[Tensor] = []
    try:
        for batch in batches:
            z = model.encode(batch.video.to(device))
            n_ctx = model.num_seq - model.pred_step
            states = _states(model, z[:, :n_ctx])  # (B, K, D, h, w)
            b, k = states.shape[:2]
            flat = states.reshape(b * k, *states.shape[2:])
            pred = model.predictor(flat.to(z.dtype)).reshape(states.shape)
            pred_pts = model.to_ball(pred.permute(0, 1, 3, 4, 2)).permute(0, 1, 4, 2, 3)
            if model.hyperbolic:
                ctx_pts = poincare.expmap0(
                    states.permute(0, 1, 3, 4, 2).to(pred_pts.dtype), c=c
                ).permute(0, 1, 4, 2, 3)
            else:
                ctx_pts = states
            hyp = model.hyperbolic
            ctx_all.append(_pool(ctx_pts.double(), hyperbolic=hyp, c=c).cpu())
            pred_all.append(_pool(pred_pts.double(), hyperbolic=hyp, c=c).cpu())
            coarse.append(batch.coarse.reshape(-1).cpu())
            fine.append((3 * batch.coarse + batch.fine).reshape(-1).cpu())
    finally:
        model.train(was_training)
    if not ctx_all:
        raise ValueError("extract_features needs at least one batch")
    return Features(
        context=torch.cat(ctx_all),
        prediction=torch.cat(pred_all),
        coarse=torch.cat(coarse),
        fine=torch.cat(fine),
        hyperbolic=model.hyperbolic,
        c=c,
    )


def train_probe(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    *,
    hyperbolic: bool,
    c: float,
    steps: int = 300,
    lr: float = 0.05,
    seed: int = 0,
) -> nn.Module:
    """Fit a probe ``(N, D) -> num_classes`` logits to the labels ``y (N,)`` by full-batch Adam
    on the cross-entropy (``steps`` steps, float64): a :class:`HyperbolicMLR` on ball points
    when ``hyperbolic``, else a linear layer on features standardised by the training data's
    mean and scale (folded into the returned layer).

    Raises:
        ValueError: ``x`` not ``(N, D)``, ``y`` not ``(N,)``, or ``steps < 1``.
    """
    if x.dim() != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (N, D) and y (N,), got {tuple(x.shape)}, {tuple(y.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    x = x.double()
    probe: nn.Module
    if hyperbolic:
        probe = HyperbolicMLR(x.shape[1], num_classes, c=c).double()
        inputs = x
    else:
        mean, scale = x.mean(0), x.std(0).clamp_min(1e-12)
        inputs = (x - mean) / scale
        probe = nn.Linear(x.shape[1], num_classes).double()
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss: Tensor = nn.functional.cross_entropy(probe(inputs), y)
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    if not hyperbolic:
        assert isinstance(probe, nn.Linear)
        with torch.no_grad():  # fold the standardisation into the layer
            w = probe.weight / scale
            probe.bias.sub_(w @ mean)
            probe.weight.copy_(w)
    return probe.eval()


def hierarchical_accuracy(pred_fine: Tensor, fine: Tensor) -> float:
    """Mean credit of fine predictions: 1 when right, 0.5 when wrong under the right coarse
    action (``fine // 3``), else 0."""
    right = pred_fine == fine
    same_coarse = (pred_fine // 3) == (fine // 3)
    return float((right.double() + 0.5 * (~right & same_coarse).double()).mean())


@torch.no_grad()
def run_probes(
    train: Features, test: Features, *, steps: int = 300, seed: int = 0
) -> dict[str, Any]:
    """Train and score every probe; returns the JSON-ready table.

    ``results``: one entry per representation and number of observed blocks ``k``, with
    ``coarse`` and ``fine`` accuracy and ``hierarchical`` (of the fine probe). ``chance``: the
    chance levels (uniform guessing: 1/3, 1/9, 2/9) and the majority-class accuracy of the
    test labels.
    """
    results = []
    for rep in REPRESENTATIONS:
        xs_tr: Tensor = getattr(train, rep)
        xs_te: Tensor = getattr(test, rep)
        for k in range(xs_tr.shape[1]):
            entry: dict[str, Any] = {"representation": rep, "observed_blocks": k + 1}
            for level, classes, y_tr, y_te in (
                ("coarse", 3, train.coarse, test.coarse),
                ("fine", NUM_FINE, train.fine, test.fine),
            ):
                probe = train_probe(
                    xs_tr[:, k],
                    y_tr,
                    classes,
                    hyperbolic=train.hyperbolic,
                    c=train.c,
                    steps=steps,
                    seed=seed,
                )
                guess = probe(xs_te[:, k].double()).argmax(-1)
                entry[level] = float((guess == y_te).double().mean())
                if level == "fine":
                    entry["hierarchical"] = hierarchical_accuracy(guess, y_te)
            results.append(entry)
    majority = {
        "coarse": float(torch.bincount(test.coarse, minlength=3).max()) / test.coarse.numel(),
        "fine": float(torch.bincount(test.fine, minlength=NUM_FINE).max()) / test.fine.numel(),
    }
    return {
        "probe": "HyperbolicMLR" if train.hyperbolic else "linear",
        "train_videos": int(train.coarse.numel()),
        "test_videos": int(test.coarse.numel()),
        "results": results,
        "chance": {"coarse": 1 / 3, "fine": 1 / NUM_FINE, "hierarchical": 2 / 9},
        "majority": majority,
    }


def format_probe_table(table: dict[str, Any]) -> str:
    """The probe table as lines of text (accuracies in %)."""
    lines = [
        f"probes ({table['probe']}; {table['train_videos']} training, {table['test_videos']} "
        "test videos), accuracy in % after k observed blocks:",
        "  representation  k  coarse  fine  hierarchical",
    ]
    for e in table["results"]:
        lines.append(
            f"  {e['representation']:<14} {e['observed_blocks']:>2}  {100 * e['coarse']:6.1f}"
            f"  {100 * e['fine']:4.1f}  {100 * e['hierarchical']:6.1f}"
        )
    ch = table["chance"]
    lines.append(
        f"  chance: coarse {100 * ch['coarse']:.1f}, fine {100 * ch['fine']:.1f}, "
        f"hierarchical {100 * ch['hierarchical']:.1f}"
    )
    return "\n".join(lines)


def plot_probes(table: dict[str, Any], title: str) -> bytes:
    """Accuracy against observed blocks, one panel per level (PNG bytes)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.2), dpi=90, sharex=True)
    for ax, level in zip(axes, ("coarse", "fine", "hierarchical"), strict=True):
        for rep, style in zip(REPRESENTATIONS, ("o-", "s--"), strict=True):
            rows = [e for e in table["results"] if e["representation"] == rep]
            ax.plot(
                [e["observed_blocks"] for e in rows],
                [100 * e[level] for e in rows],
                style,
                label=rep,
            )
        ax.axhline(100 * table["chance"][level], color="k", ls=":", lw=0.8, label="chance")
        ax.set_title(level, fontsize=9)
        ax.set_xlabel("observed blocks")
        ax.set_xticks(sorted({e["observed_blocks"] for e in table["results"]}))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_probes(table: dict[str, Any], out_dir: str | os.PathLike[str], title: str) -> list[str]:
    """Write ``probe.json`` and ``probe.png`` into ``out_dir`` (atomically); returns the PNG
    names."""
    out = Path(out_dir)
    atomic_write_text(out / PROBE_FILE, json.dumps(table, indent=1) + "\n")
    atomic_write_bytes(out / PROBE_PNG, plot_probes(table, title))
    return [PROBE_PNG]
