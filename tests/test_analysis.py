"""The evaluation of :mod:`training.analysis`: bootstrap intervals, the disk projection, the
per-video statistics of a model's predictions, and ``--eval_only`` through the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_config import TINY, cli_args

import poincare
import train_cli
from models.video import VideoFuturePredictor
from training.analysis import (
    PredictionSet,
    bootstrap_ci,
    bootstrap_difference_ci,
    collect_predictions,
    disk_projection,
    format_summary,
    observed_frames,
    radius_report,
)
from training.data import SpriteVideoConfig, SpriteVideos

pytestmark = pytest.mark.usefixtures("one_thread")


# --- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_of_a_constant_is_the_constant() -> None:
    assert bootstrap_ci(torch.full((7,), 2.5)) == (2.5, 2.5)
    assert bootstrap_ci(torch.tensor([4.0])) == (4.0, 4.0)
    lo, hi = bootstrap_ci(torch.empty(0))
    assert math.isnan(lo) and math.isnan(hi)


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_videos() -> None:
    g = torch.Generator().manual_seed(0)
    small = torch.randn(30, generator=g, dtype=torch.float64)
    large = torch.randn(3000, generator=g, dtype=torch.float64)
    lo_s, hi_s = bootstrap_ci(small)
    lo_l, hi_l = bootstrap_ci(large)
    assert lo_s < float(small.mean()) < hi_s and lo_l < float(large.mean()) < hi_l
    # the interval's width falls like 1/sqrt(V): 10x narrower for 100x the videos (±25 %)
    ratio = (hi_s - lo_s) / (hi_l - lo_l)
    assert 7.5 < ratio < 12.5
    # the standard normal's 95 % half-width is 1.96 / sqrt(V)
    assert (hi_l - lo_l) / 2 == pytest.approx(1.96 / math.sqrt(3000), rel=0.15)


def test_bootstrap_difference_moves_with_a_shift() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(40, generator=g, dtype=torch.float64)
    b = torch.randn(25, generator=g, dtype=torch.float64)
    lo, hi = bootstrap_difference_ci(a, b)
    lo2, hi2 = bootstrap_difference_ci(a, b + 3.0)  # same seed: the same resamples
    assert lo2 == pytest.approx(lo - 3.0, abs=1e-12) and hi2 == pytest.approx(hi - 3.0, abs=1e-12)
    assert bootstrap_difference_ci(torch.ones(3), torch.zeros(4)) == (1.0, 1.0)
    assert all(math.isnan(x) for x in bootstrap_difference_ci(a, torch.empty(0)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": torch.ones(2, 2)}, "one-dimensional"),
        ({"values": torch.ones(3), "resamples": 0}, "resamples must be >= 1"),
        ({"values": torch.ones(3), "level": 1.0}, r"level must be in \(0, 1\)"),
    ],
)
def test_bootstrap_bad_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(**kwargs)  # type: ignore[arg-type]


# --- the disk projection ------------------------------------------------------------------------


@pytest.mark.parametrize("c", [0.1, 1.0, 4.0])
def test_disk_projection_keeps_the_distance_from_the_origin(c: float) -> None:
    g = torch.Generator().manual_seed(2)
    n, d = 200, 8
    direction = torch.randn(n, d, generator=g, dtype=torch.float64)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    # dist0 = 2|v| / sqrt(c): up to about 30, far out but below float64's 37.4 at c = 1
    radius = torch.linspace(0.0, 15.0, n, dtype=torch.float64)[:, None] / math.sqrt(c)
    x = poincare.expmap0(direction * radius, c=c)
    y = disk_projection(x, c=c)
    assert y.shape == (n, 2)
    poincare.check_point(y, c=c)  # strictly inside the disk
    # rounding the output point to a float moves it by up to about one hULP: eps * lambda |y|
    eps = torch.finfo(torch.float64).eps
    hulp = eps * poincare.conformal_factor(x, c=c).squeeze(-1) * x.norm(dim=-1)
    err = (poincare.dist0(y, c=c) - poincare.dist0(x, c=c)).abs()
    assert bool((err <= 4 * hulp + 1e-14).all()), float((err / (hulp + 1e-300)).max())


def test_disk_projection_of_planar_points_is_the_identity_and_checks_shapes() -> None:
    x = poincare.expmap0(torch.tensor([[0.3, -1.2], [2.0, 0.5], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(disk_projection(x, c=1.0), x, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\) with D >= 2"):
        disk_projection(torch.zeros(3), c=1.0)
    with pytest.raises(ValueError, match=r"basis must have shape \(4, 2\)"):
        disk_projection(torch.zeros(3, 4), c=1.0, basis=torch.eye(2))


# --- per-video statistics of a model ------------------------------------------------------------


def _model(hyperbolic: bool) -> VideoFuturePredictor:
    torch.manual_seed(0)
    return VideoFuturePredictor(
        num_seq=5,
        seq_len=2,
        pred_step=2,
        img_dim=16,
        feature_dim=8,
        encoder_width=4,
        num_heads=2,
        transformer_layers=1,
        hyperbolic=hyperbolic,
        use_transformer=hyperbolic,
    )


@pytest.mark.parametrize("hyperbolic", [True, False])
def test_collect_predictions_matches_the_model(hyperbolic: bool) -> None:
    model = _model(hyperbolic)
    cfg = SpriteVideoConfig(num_seq=5, seq_len=2, img_dim=16)
    data = SpriteVideos(cfg, seed=3, split="test", epoch=0, batch_size=6, num_batches=2)
    observed = observed_frames(5, 2, 2)
    assert observed == 6
    ps = collect_predictions(
        model, [data[0], data[1]], device=torch.device("cpu"), observed=observed
    )
    assert ps.radius.shape == ps.spread.shape == ps.target_radius.shape == (12, 2)
    assert ps.pooled_pred.shape == (12, 2, 8)
    assert ps.measure == ("dist0" if hyperbolic else "norm")
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        pred, _ = model(data[1].video)
    pred = pred.reshape(6, 2, -1, 8).double()
    r = poincare.dist0(pred) if hyperbolic else pred.norm(dim=-1)
    torch.testing.assert_close(ps.radius[6:], r.mean(-1))
    assert ps.hidden is not None and ps.coarse is not None
    assert torch.equal(ps.hidden[6:], data[1].reveal >= observed)
    assert torch.equal(ps.coarse[:6], data[0].coarse)
    # the video range of the data reveals in frames [3, 6): all revealed before frame 6
    assert not bool(ps.hidden.any())


def test_radius_report_of_known_radii() -> None:
    v = 8
    hidden = torch.tensor([True, False] * 4)
    coarse = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    # step 1: hidden videos at 1, revealed at 2; step 2 half a unit closer to the origin
    r1 = torch.where(hidden, 1.0, 2.0).double()
    radius = torch.stack([r1, r1 - 0.5], dim=1)
    ps = PredictionSet(
        radius=radius,
        spread=torch.zeros(v, 2, dtype=torch.float64),
        target_radius=torch.full((v, 2), 3.0, dtype=torch.float64),
        pooled_pred=torch.zeros(v, 2, 4, dtype=torch.float64),
        pooled_target=torch.zeros(v, 2, 4, dtype=torch.float64),
        coarse=coarse,
        hidden=hidden,
        hyperbolic=True,
        c=1.0,
    )
    rep = radius_report(ps, resamples=200)
    assert rep["videos"] == 8 and rep["hidden_share"] == 0.5
    assert [e["mean"] for e in rep["horizon"]] == [1.5, 1.0]
    assert rep["horizon_drop"] == {"mean": 0.5, "ci95": [0.5, 0.5]}
    assert rep["horizon"][0]["target_mean"] == 3.0
    for e in rep["ambiguity"]:
        assert e["hidden_minus_revealed"] == {"mean": -1.0, "ci95": [-1.0, -1.0]}
        assert e["hidden"]["videos"] == 4 and e["revealed"]["videos"] == 4
    assert set(rep["by_coarse"]) == {"translate", "orbit", "oscillate"}
    assert rep["by_coarse"]["translate"][0]["hidden"]["videos"] == 2
    json.dumps(rep)  # JSON-ready
    text = format_summary(rep)
    assert "step 1 1.500 [" in text and "minus revealed: step 1 -1.000 [-1.000, -1.000]" in text


# --- through the command line ---------------------------------------------------------------


def test_evaluation_at_the_end_and_eval_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "r"
    # 5 blocks of 2 frames, 2 predicted: 6 observed frames, reveals in [3, 6)
    args = cli_args(num_seq=5, pred_step=2, epochs=1, eval_batches=3)
    assert train_cli.main([*args, "--no-tensorboard", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "eval on 12 videos (dist0 of the predictions" in stdout
    rep = json.loads((out / "eval.json").read_text())
    assert rep["videos"] == 12 and rep["observed_frames"] == 6 and rep["epoch"] == 1
    assert [e["step"] for e in rep["horizon"]] == [1, 2]
    for name in ("radius_by_horizon.png", "radius_by_ambiguity.png", "poincare_disk.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    (out / "eval.json").unlink()
    assert train_cli.main(["--resume", str(out), "--eval_only"]) == 0
    again = json.loads((out / "eval.json").read_text())
    assert again["horizon"] == rep["horizon"]  # the same weights and test videos
    assert capsys.readouterr().out.strip().endswith(f"written to {out}: eval.json")
    # nothing was trained: the checkpoint and the metrics are unchanged
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1


def test_eval_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--eval_only"])
    assert exc.value.code == 2
    assert "--eval_only needs --resume" in capsys.readouterr().err
    out = tmp_path / "r"
    assert train_cli.main([*cli_args(epochs=1, eval_batches=0), "--out", str(out)]) == 0
    assert not (out / "eval.json").exists()
    assert TINY["num_seq"] == 3  # the tiny default has one step, evaluated when asked


def test_model_title_names_each_variant() -> None:
    from training.analysis import model_title

    sizes = {"num_seq": 3, "seq_len": 2, "pred_step": 1, "img_dim": 16, "feature_dim": 8}
    sizes |= {"encoder_width": 4, "num_heads": 2, "transformer_layers": 1}
    titles = [
        model_title(VideoFuturePredictor(**sizes, **kw))  # type: ignore[arg-type]
        for kw in (
            {},
            {"space_time": True},
            {"use_transformer": False},
            {"hyperbolic": False, "use_transformer": False},
        )
    ]
    assert titles == [
        "hyperbolic transformer",
        "hyperbolic space-time transformer",
        "hyperbolic ConvGRU",
        "Euclidean ConvGRU",
    ]
