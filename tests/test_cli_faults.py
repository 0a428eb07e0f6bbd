"""Faults a run meets, each through ``train_cli.py`` in a subprocess (tiny settings): the exit
status, the last line and what the run folder holds afterwards.

- A damaged checkpoint (bytes flipped inside a stored tensor; NaN weights) is refused in one
  line by ``--resume``, ``--eval_only`` and ``--probe``, and nothing is written.
- A loader worker that cannot read a frame, or that is killed, stops the run with one line
  after saving the state reached, never a hang; a resume then finishes the run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_config import (
    ROOT,
    checkpoint_epoch,
    cli_args,
    cli_env,
    last_line,
    metrics_rows,
    one_error_line,
    run_cli,
    snapshot,
    write_frames,
)

FLIPPED = 64


def _flip_second_moments(path: Path) -> None:
    """Flip the sign bit of the first :data:`FLIPPED` values of the first parameter's Adam
    second moment, in place in the file (the archive's structure stays intact: only its
    stored CRC no longer matches)."""
    ckpt = torch.load(path, weights_only=True)
    raw = ckpt["optimizer"]["state"][0]["exp_avg_sq"].contiguous().numpy().tobytes()
    data = bytearray(path.read_bytes())
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0, "the tensor's bytes are not found once"
    for i in range(FLIPPED):
        data[at + 4 * i + 3] ^= 0x80  # little-endian float32: the sign is in the last byte
    path.write_bytes(bytes(data))


def _poison_weights(path: Path) -> str:
    """Set the first weight matrix of the model to NaN (saved with a valid archive); returns
    the message part that names it."""
    ckpt = torch.load(path, weights_only=True)
    key, t = next((k, t) for k, t in ckpt["model"].items() if t.is_floating_point() and t.dim() > 1)
    t.fill_(float("nan"))
    torch.save(ckpt, path)
    return f"model tensor {key!r} has {t.numel()} of {t.numel()} non-finite values"


def test_damaged_checkpoints_are_refused_by_every_command(tmp_path: Path) -> None:
    made = run_cli([*cli_args(epochs=1), "--out", "R"], tmp_path)
    assert made.returncode == 0, made.stderr
    for name in ("F", "N"):
        shutil.copytree(tmp_path / "R", tmp_path / name)
    _flip_second_moments(tmp_path / "F" / "checkpoint_last.pt")
    # what an unchecked load gives: second moments below zero, which would train on
    moments = torch.load(tmp_path / "F" / "checkpoint_last.pt", weights_only=True)
    assert int((moments["optimizer"]["state"][0]["exp_avg_sq"] < 0).sum()) == FLIPPED
    reasons = {
        "F": re.escape("its archive member '")
        + r"[^']+/data/\d+"
        + re.escape("' fails its CRC check; it is not the file the trainer wrote"),
        "N": re.escape(_poison_weights(tmp_path / "N" / "checkpoint_last.pt")),
    }
    for name, reason in reasons.items():
        before = snapshot(tmp_path / name)
        for flags in (["--epochs", "2"], ["--eval_only"], ["--probe", "--probe_batches", "2"]):
            proc = run_cli(["--resume", name, *flags], tmp_path)
            assert proc.returncode == 2, (flags, proc.stderr)
            start = f"train_cli.py: error: checkpoint '{name}/checkpoint_last.pt' is corrupt: "
            assert re.fullmatch(re.escape(start) + reason, one_error_line(proc)), proc.stderr
            assert proc.stdout == ""
        assert snapshot(tmp_path / name) == before  # nothing written, not even the lock


def _frame_flags() -> list[str]:
    return ["--dataset", "frames", "--data_root", "data", "--split_csv", "data/split.csv"]


def test_a_frame_a_worker_cannot_read_stops_the_run_and_a_resume_finishes_it(
    tmp_path: Path,
) -> None:
    """10 videos of 8 frames, 8 for training: 2 steps per epoch. One frame is a text file."""
    pytest.importorskip("PIL")
    write_frames(tmp_path / "data", videos=10, frames=8)
    bad = tmp_path / "data" / "v3" / "0002.png"  # in every clip of v3, a training video
    good = bad.read_bytes()
    bad.write_text("not a png")
    args = [*cli_args(batch_size=4), *_frame_flags(), "--num_workers", "2"]
    proc = run_cli([*args, "--out", "R"], tmp_path, timeout=120)  # a hang fails here
    assert proc.returncode == 2, proc.stderr
    r = tmp_path / "R"
    ckpt = torch.load(r / "checkpoint_last.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and ckpt["step"] == ckpt["batch"] < 2
    line = one_error_line(proc)
    assert line.startswith(f"train_cli.py: error: cannot read frame file {bad}: "), line
    assert line.endswith(
        f"; the state at epoch 1, batch {ckpt['batch']} (step {ckpt['step']}) is saved in "
        "R/checkpoint_last.pt: fix the data, then continue with --resume R"
    )
    assert sorted(snapshot(r)) == [".lock", "checkpoint_last.pt", "config.json"]

    bad.write_bytes(good)
    resumed = run_cli(["--resume", "R"], tmp_path, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert last_line(resumed.stdout).startswith("finished 2 epochs in R: ")
    assert (checkpoint_epoch(r), metrics_rows(r)) == (2, 2)


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc``)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_killed_worker_stops_the_run_with_its_state_saved(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "train_cli.py"), *cli_args(train_batches=2000, epochs=1)]
    cmd += ["--num_workers", "2", "--out", "K"]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) == 2, "the two loader workers never started"
        time.sleep(1.0)  # steps under way
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)  # a hang fails here
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 1, err
    assert "Traceback" not in err and err.count("train_cli.py: error:") == 1, err
    k = tmp_path / "K"
    ckpt = torch.load(k / "checkpoint_last.pt", weights_only=True)
    assert ckpt["epoch"] == 0 and 0 < ckpt["batch"] == ckpt["step"] < 2000
    assert re.fullmatch(
        re.escape("train_cli.py: error: a data-loading worker failed (")
        + r".*DataLoader worker \(pid(\(s\))? \d+\) .*"
        + re.escape(
            f"); the state at epoch 1, batch {ckpt['batch']} (step {ckpt['step']}) is saved "
            "in K/checkpoint_last.pt: continue with --resume K"
        ),
        last_line(err),
    ), err
    assert sorted(snapshot(k)) == [".lock", "checkpoint_last.pt", "config.json"]
    assert metrics_rows(k) == 0
