"""Tests of the training loop, its checkpoints and the command line (tiny sizes)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_config import TINY, cli_args

import train_cli
from models.video import VideoFuturePredictor
from training.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    get_rng_state,
    load_checkpoint,
    set_rng_state,
)
from training.cli import build_parser, config_from_args
from training.config import TrainConfig
from training.trainer import TrainingDivergedError, WarmupCosine, run

ROOT = Path(__file__).resolve().parents[1]

TINY_ARGS = cli_args()


def tiny(out: Path, **kw: Any) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(out), **kw})


def _weights(folder: Path) -> dict[str, Any]:
    return load_checkpoint(folder / "checkpoint_last.pt")


def test_cli_smoke_one_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert train_cli.main([*TINY_ARGS, "--epochs", "1", "--out", str(out)]) == 0
    for name in (
        "config.json",
        "metrics.jsonl",
        "metrics.csv",
        "checkpoint_last.pt",
        "checkpoint_best.pt",
        "curves.png",
    ):
        assert (out / name).is_file(), name
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["epoch"] == 1 and math.isfinite(rec["val_loss"]) and math.isfinite(rec["train_loss"])
    assert rec["chance_top1"] == pytest.approx(1 / rec["val_candidates"])
    assert 0.0 <= rec["val_top1"] <= rec["val_top5"] <= 1.0
    assert len((out / "metrics.csv").read_text().splitlines()) == 2
    assert json.loads((out / "config.json").read_text())["feature_dim"] == 8
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    captured = capsys.readouterr()
    # epoch lines and the summary on stdout (so `> train.log` keeps them), nothing else
    out_lines = captured.out.strip().splitlines()
    assert out_lines[0].startswith("epoch 1/1") and "val top-1" in out_lines[0]
    assert out_lines[-1].startswith("finished 1 epoch in ") and "chance" in out_lines[-1]
    # the evaluation's summary: radius by horizon, and the ambiguity line
    assert out_lines[1].startswith("eval on 8 videos (dist0 of the predictions")
    assert "fine action is revealed by the observed past of every video" in out_lines[2]
    assert len(out_lines) == 4


def _stop_after(k: int) -> Any:
    return lambda step: step >= k


@pytest.mark.parametrize(
    ("variant", "stop_at"),
    [({"use_transformer": True}, 4), ({"use_transformer": False, "hyperbolic": True}, 2)],
)
def test_resume_is_bit_exact(tmp_path: Path, variant: dict[str, Any], stop_at: int) -> None:
    full = run(tiny(tmp_path / "full", **variant))
    part = run(tiny(tmp_path / "part", **variant), on_step=_stop_after(stop_at))
    assert part.interrupted and part.step == stop_at
    ck = _weights(tmp_path / "part")
    assert ck["step"] == stop_at
    assert ck["batch"] == stop_at % TINY["train_batches"]
    resumed = run(
        tiny(tmp_path / "part", resume=str(tmp_path / "part" / "checkpoint_last.pt"), **variant)
    )
    assert not resumed.interrupted
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["step"] == b["step"] == TINY["epochs"] * TINY["train_batches"]
    for ha, hb in zip(full.history, resumed.history, strict=True):
        for key in ("train_loss", "val_loss", "val_top1", "val_top5", "lr"):
            assert ha[key] == hb[key], key
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == TINY["epochs"]


def test_sigterm_mid_epoch_leaves_a_valid_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        str(ROOT / "train_cli.py"),
        *TINY_ARGS,
        "--no-use_transformer",
        "--epochs",
        "50",
        "--train_batches",
        "1000",
        "--out",
        str(out),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (out / "config.json").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert b"Traceback" not in err
    assert b"checkpoint saved" in err
    ck = load_checkpoint(out / "checkpoint_last.pt")
    assert ck["epoch"] == 0 and 0 < ck["batch"] < 1000 and ck["step"] == ck["batch"]
    assert not list(out.glob(".*tmp*"))
    # it resumes from there
    resumed = run(
        tiny(
            out,
            use_transformer=False,
            epochs=50,
            train_batches=1000,
            resume=str(out / "checkpoint_last.pt"),
        ),
        on_step=_stop_after(ck["step"] + 1),
    )
    assert resumed.step == ck["step"] + 1


def test_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tiny(tmp_path / "r", resume=str(bad)))
    run(tiny(tmp_path / "good", epochs=1, use_transformer=False))
    data = (tmp_path / "good" / "checkpoint_last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt.*corrupt"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoint_with_other_architecture_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tiny(tmp_path / "r", epochs=1, use_transformer=False))
    ck = str(tmp_path / "r" / "checkpoint_last.pt")
    with pytest.raises(CheckpointError, match="use_transformer: checkpoint false, this run true"):
        run(tiny(tmp_path / "r2", resume=ck, use_transformer=True))
    with pytest.raises(CheckpointError, match="feature_dim: checkpoint 8, this run 16"):
        run(tiny(tmp_path / "r2", resume=ck, use_transformer=False, feature_dim=16))
    assert train_cli.main([*TINY_ARGS, "--use_transformer", "--resume", ck]) == 2
    err = capsys.readouterr().err
    assert "use_transformer" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--no-hyperbolic", "--use_transformer"], "--use_transformer needs --hyperbolic"),
        (["--no-hyperbolic"], "--use_transformer needs --hyperbolic"),
        (["--pred_step", "5", "--num_seq", "5"], "--pred_step (5) must be smaller"),
        (["--num_heads", "3"], "--num_heads (3) must divide --feature_dim"),
        (["--batch_size", "0"], "--batch_size must be positive"),
        (["--epochs", "-1"], "--epochs must be positive"),
        (["--img_dim", "20"], "--img_dim must be a multiple of 8"),
        (["--lr", "0"], "--lr must be a finite positive number"),
        (["--lr", "inf"], "--lr must be a finite positive number"),
        (["--lr", "nan"], "--lr must be a finite positive number"),
        (["--distance", "l2"], "invalid choice"),
        (["--seed", str(2**64)], "--seed must be in [0, 2**63 - 1]"),
        (["--seed", "-1"], "--seed must be in [0, 2**63 - 1]"),
        (["--curvature", "inf"], "--curvature: c must be a finite"),
        (["--curvature", "1e300"], "--curvature must be in [0.0001, 100]"),
        (["--curvature", "1e-300"], "--curvature must be in [0.0001, 100]"),
        (["--wd", "inf"], "--wd must be finite and >= 0"),
        (["--dataset", "frames"], "--dataset frames needs --data_root"),
        (["--dataset", "frames", "--data_root", "x"], "--dataset frames needs --split_csv"),
        (["--val_share", "1"], "--val_share must be in (0, 1)"),
        (["--ds", "0"], "--ds must be positive"),
        (["--batch_siz", "4"], "unrecognized arguments"),
    ],
)
def test_impossible_flags_exit_2(
    args: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        config_from_args(parser, parser.parse_args(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert reason in err
    assert err.strip().splitlines()[-1].startswith("train_cli.py: error:")


def test_defaults_and_the_seed_command() -> None:
    parser = build_parser()
    plain = config_from_args(parser, parser.parse_args(["--fp64_hyper"]))
    assert plain.hyperbolic and plain.use_transformer and plain.fp64_hyper
    assert (plain.num_heads, plain.transformer_layers, plain.transformer_dropout) == (8, 4, 0.1)
    assert plain.feature_dim % 8 == 0
    seed_cmd = [
        "--hyperbolic",
        "--use_transformer",
        "--num_heads",
        "8",
        "--transformer_layers",
        "4",
        "--transformer_dropout",
        "0.1",
        "--fp64_hyper",
    ]
    assert config_from_args(parser, parser.parse_args(seed_cmd)) == plain
    gru = config_from_args(parser, parser.parse_args(["--no-hyperbolic", "--no-use_transformer"]))
    assert not gru.hyperbolic and not gru.use_transformer
    text = parser.format_help()
    for flag in (
        "--hyperbolic",
        "--no-hyperbolic",
        "--use_transformer",
        "--no-use_transformer",
        "--num_heads",
        "--transformer_layers",
        "--transformer_dropout",
        "--fp64_hyper",
        "--distance",
        "--pred_step",
        "--seq_len",
        "--num_seq",
        "--img_dim",
        "--batch_size",
        "--lr",
        "--wd",
        "--epochs",
        "--seed",
        "--num_workers",
        "--device",
        "--out",
        "--resume",
    ):
        assert flag in text, flag


def test_nonfinite_steps_are_skipped_then_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = VideoFuturePredictor.loss
    calls = {"n": 0}

    def sometimes_nan(self: VideoFuturePredictor, video: torch.Tensor) -> Any:
        out = original(self, video)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 2:
                return type(out)(out.loss * math.nan, out.top1, out.top5, out.num_candidates)
        return out

    monkeypatch.setattr(VideoFuturePredictor, "loss", sometimes_nan)
    result = run(tiny(tmp_path / "a", use_transformer=False))
    assert result.nonfinite_total == 1
    assert result.history[0]["train_skipped"] == 1
    assert all(math.isfinite(h["val_loss"]) for h in result.history)

    def always_nan(self: VideoFuturePredictor, video: torch.Tensor) -> Any:
        out = original(self, video)
        if self.training:
            return type(out)(out.loss * math.nan, out.top1, out.top5, out.num_candidates)
        return out

    monkeypatch.setattr(VideoFuturePredictor, "loss", always_nan)
    with pytest.raises(TrainingDivergedError, match="non-finite for 2 consecutive steps"):
        run(tiny(tmp_path / "b", use_transformer=False, max_nonfinite=2))
    assert load_checkpoint(tmp_path / "b" / "checkpoint_last.pt")["step"] == 2


def test_warmup_cosine() -> None:
    f = WarmupCosine(4, 14)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(9) == pytest.approx(0.5)
    assert f(14) == pytest.approx(0.0, abs=1e-12) and f(100) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        WarmupCosine(1, 0)


def test_rng_state_round_trip_and_atomic_write(tmp_path: Path) -> None:
    import random

    import numpy as np

    state = get_rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_learnable_curvature_is_one_undecayed_parameter_of_the_optimizer() -> None:
    from training.trainer import build_model, build_optimizer

    config = TrainConfig(learn_curvature=True, feature_dim=8, num_heads=2, transformer_layers=1)
    model = build_model(config)
    assert model.ball.learnable
    opt = build_optimizer(model, config)
    assert isinstance(opt, torch.optim.AdamW)
    groups = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert groups[id(model.ball.log_c)] == 0.0
    assert len(groups) == len(list(model.parameters()))  # the shared ball is listed once
    assert not build_model(TrainConfig(feature_dim=8, num_heads=2)).ball.learnable


def test_learn_curvature_logs_the_curvature_every_epoch(tmp_path: Path) -> None:
    from training.trainer import run

    config = TrainConfig(
        learn_curvature=True,
        curvature=0.5,
        feature_dim=8,
        num_heads=2,
        transformer_layers=1,
        epochs=2,
        train_batches=2,
        val_batches=1,
        batch_size=4,
        img_dim=16,
        out=str(tmp_path / "run"),
        progress=False,
    )
    result = run(config)
    values = [h["curvature"] for h in result.history]
    assert len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values)
    assert values[0] != 0.5  # it moved: the curvature is trained
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert all('"curvature"' in line for line in lines)


def test_data_workers_do_not_change_the_result(tmp_path: Path) -> None:
    a = run(tiny(tmp_path / "w0", epochs=1, use_transformer=False, num_workers=0))
    b = run(tiny(tmp_path / "w1", epochs=1, use_transformer=False, num_workers=1))
    wa, wb = _weights(tmp_path / "w0")["model"], _weights(tmp_path / "w1")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.history[0]["val_loss"] == b.history[0]["val_loss"]


def test_compile_trains_like_eager_and_checkpoints_the_plain_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--compile`` (here through ``aot_eager``: Dynamo and AOTAutograd trace forward and
    backward as inductor does, without its code generation, which takes minutes on 2 cores)
    trains the same model, saves plain weights, and resumes with or without compilation."""
    from training import trainer

    monkeypatch.setattr(trainer, "_COMPILE_BACKEND", "aot_eager")
    full = run(tiny(tmp_path / "eager"))
    part = run(tiny(tmp_path / "compiled", compile=True), on_step=_stop_after(4))
    assert part.interrupted and part.step == 4
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["compile"] is True
    mid = _weights(tmp_path / "compiled")["model"]
    assert not any("_orig_mod" in k for k in mid)
    # resumed without --compile
    back = run(tiny(tmp_path / "compiled", resume=str(tmp_path / "compiled")))
    # and an eager checkpoint resumed with --compile
    run(tiny(tmp_path / "to_compiled"), on_step=_stop_after(2))
    to = run(tiny(tmp_path / "to_compiled", resume=str(tmp_path / "to_compiled"), compile=True))
    want = _weights(tmp_path / "eager")["model"]
    for folder in ("compiled", "to_compiled"):
        got = _weights(tmp_path / folder)["model"]
        assert got.keys() == want.keys() == mid.keys()
        for k in want:
            assert (got[k].shape, got[k].dtype) == (want[k].shape, want[k].dtype), k
    # The same computation up to rounding (which AdamW's first steps amplify in parameters
    # whose exact gradient is 0, such as a bias before a batch norm): the same losses.
    for result in (back, to):
        assert not result.interrupted and result.step == full.step
        for h, g in zip(full.history, result.history, strict=True):
            for key in ("train_loss", "val_loss"):
                assert math.isfinite(g[key]) and g[key] == pytest.approx(h[key], rel=1e-4), key


def test_compile_failures_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torch._inductor import config as inductor_config

    from training import trainer

    # found before training: no C++ compiler for inductor on the CPU
    with inductor_config.patch({"cpp.cxx": (None, "no-such-c++")}):
        code = train_cli.main([*TINY_ARGS, "--compile", "--out", str(tmp_path / "a")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train_cli.py: error: --compile:"), err
    assert "C++ compiler" in err[0]
    assert not (tmp_path / "a" / "checkpoint_last.pt").exists()

    # found while compiling: the compiler's exception becomes one line, its report a file
    def broken(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        raise RuntimeError("the backend broke")

    log = tmp_path / "compile_error.log"
    compiled = torch.compile(lambda x: x * 2 + 1, backend=broken)
    with (
        pytest.raises(trainer.CompileError, match="failed at training step 3") as exc,
        trainer._compile_errors(True, log, 2),
    ):
        compiled(torch.ones(3))
    assert "\n" not in str(exc.value) and str(log) in str(exc.value)
    assert "the backend broke" in log.read_text()
    with (  # other errors pass through
        pytest.raises(ValueError, match="not from the compiler"),
        trainer._compile_errors(True, log, 0),
    ):
        raise ValueError("not from the compiler")


def test_compile_flag_is_documented_and_off_by_default() -> None:
    parser = build_parser()
    assert not config_from_args(parser, parser.parse_args([])).compile
    assert config_from_args(parser, parser.parse_args(["--compile"])).compile
    text = " ".join(parser.format_help().split())
    assert "--compile" in text and "dynamic=False" in text and "inductor" in text
