"""Early action recognition probes (:mod:`training.probe`) and ``--probe`` on a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_config import cli_args

import poincare
import train_cli
from models.video import VideoFuturePredictor
from training.config import TrainConfig
from training.data import SpriteVideoConfig, SpriteVideos
from training.probe import (
    NUM_FINE,
    extract_features,
    format_probe_table,
    hierarchical_accuracy,
    run_probes,
    train_probe,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hierarchical_accuracy_gives_half_credit_under_the_right_coarse_action() -> None:
    fine = torch.tensor([0, 1, 2, 3, 4, 8])
    assert hierarchical_accuracy(fine, fine) == 1.0
    # 1 -> 2 and 3 -> 5 stay in their coarse action (half credit); 0 -> 4 and 8 -> 0 do not
    guess = torch.tensor([4, 2, 2, 5, 4, 0])
    assert hierarchical_accuracy(guess, fine) == pytest.approx((0 + 0.5 + 1 + 0.5 + 1 + 0) / 6)


@pytest.mark.parametrize("hyperbolic", [True, False])
def test_probe_separates_separable_classes(hyperbolic: bool) -> None:
    g = torch.Generator().manual_seed(0)
    centres = 1.5 * torch.randn(3, 4, generator=g, dtype=torch.float64)
    y = torch.arange(300) % 3
    v = centres[y] + 0.2 * torch.randn(300, 4, generator=g, dtype=torch.float64)
    x = poincare.expmap0(v) if hyperbolic else v
    probe = train_probe(x[:200], y[:200], 3, hyperbolic=hyperbolic, c=1.0, steps=200)
    acc = float((probe(x[200:]).argmax(-1) == y[200:]).double().mean())
    assert acc > 0.95
    with pytest.raises(ValueError, match=r"x must be \(N, D\) and y \(N,\)"):
        train_probe(x, y[:5], 3, hyperbolic=hyperbolic, c=1.0)


@pytest.mark.parametrize(
    ("hyperbolic", "transformer"), [(True, True), (True, False), (False, False)]
)
def test_features_after_k_blocks_are_the_model_on_k_blocks(
    hyperbolic: bool, transformer: bool
) -> None:
    torch.manual_seed(0)
    model = VideoFuturePredictor(
        num_seq=4,
        seq_len=2,
        pred_step=1,
        img_dim=16,
        feature_dim=8,
        encoder_width=4,
        num_heads=2,
        transformer_layers=1,
        hyperbolic=hyperbolic,
        use_transformer=transformer,
    )
    cfg = SpriteVideoConfig(num_seq=4, seq_len=2, img_dim=16)
    data = SpriteVideos(cfg, seed=0, split="test", epoch=0, batch_size=5, num_batches=1)
    f = extract_features(model, [data[0]], device=torch.device("cpu"))
    assert f.context.shape == f.prediction.shape == (5, 3, 8)
    assert torch.equal(f.coarse, data[0].coarse)
    assert torch.equal(f.fine, 3 * data[0].coarse + data[0].fine) and int(f.fine.max()) < NUM_FINE
    # causal aggregators: the representation after k blocks is the prediction made from a past
    # of k blocks, so the last one is the model's own prediction from the whole past
    model.eval()
    with torch.no_grad():
        pred, _ = model(data[0].video)
    pooled = pred[:, 0].reshape(5, -1, 8).double()
    ref = poincare.einstein_midpoint(pooled, dim=-2) if hyperbolic else pooled.mean(-2)
    torch.testing.assert_close(f.prediction[:, -1], ref, rtol=1e-5, atol=1e-6)


def test_probe_table_and_the_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "r"
    assert train_cli.main([*cli_args(epochs=1), "--out", str(out)]) == 0
    capsys.readouterr()
    assert train_cli.main(["--resume", str(out), "--probe", "--probe_batches", "3"]) == 0
    text = capsys.readouterr().out
    assert "probes (HyperbolicMLR; 12 training, 8 test videos)" in text
    table = json.loads((out / "probe.json").read_text())
    # TINY: 3 blocks, 1 predicted: 2 observed, so k = 1, 2 for each representation
    assert [(e["representation"], e["observed_blocks"]) for e in table["results"]] == [
        ("context", 1),
        ("context", 2),
        ("prediction", 1),
        ("prediction", 2),
    ]
    for e in table["results"]:
        assert 0.0 <= e["fine"] <= e["hierarchical"] <= 1.0 and 0.0 <= e["coarse"] <= 1.0
    assert table["chance"] == {"coarse": 1 / 3, "fine": 1 / 9, "hierarchical": 2 / 9}
    assert (out / "probe.png").read_bytes()[:4] == b"\x89PNG"
    assert format_probe_table(table).splitlines()[0] == text.splitlines()[0]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1  # nothing trained


def test_probe_flags_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--probe"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--probe needs --resume" in err
    video = TrainConfig(probe=True, resume="r", dataset="video", data_root="d")
    assert video.problems() == ["--probe needs --dataset sprites (the videos with action labels)"]
    assert TrainConfig(probe=True, resume="r", probe_batches=0).problems() == [
        "--probe needs --probe_batches and --eval_batches of at least 1"
    ]


def test_run_probes_on_features_with_one_step() -> None:
    g = torch.Generator().manual_seed(3)
    from training.probe import Features

    def feats(n: int) -> Features:
        coarse = torch.arange(n) % 3
        fine = 3 * coarse + (torch.arange(n) // 3) % 3
        v = torch.randn(n, 1, 4, generator=g, dtype=torch.float64) + fine[:, None, None] * 0.0
        return Features(v, v, coarse, fine, hyperbolic=False, c=1.0)

    table = run_probes(feats(90), feats(45), steps=20)
    assert table["probe"] == "linear" and len(table["results"]) == 2
    assert table["majority"]["coarse"] == pytest.approx(1 / 3)
