"""What the training tests share (a helper, not a test): the tiny training configuration, the
command line that runs it in a subprocess as a user would, and a small folder of frames."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hidden_modules import hiding_env

ROOT = Path(__file__).resolve().parents[1]

# A few seconds per run on one CPU thread: 16 px frames, 3 blocks of 2, 8 features.
TINY: dict[str, Any] = {
    "img_dim": 16,
    "seq_len": 2,
    "num_seq": 3,
    "pred_step": 1,
    "feature_dim": 8,
    "encoder_width": 4,
    "num_heads": 2,
    "transformer_layers": 1,
    "batch_size": 4,
    "train_batches": 3,
    "val_batches": 1,
    "eval_batches": 2,
    "epochs": 2,
    "warmup_steps": 2,
    "progress": False,
    "device": "cpu",
}


def cli_args(**overrides: Any) -> list[str]:
    """:data:`TINY` (with ``overrides``) as ``train_cli.py`` flags."""
    settings = {**TINY, **overrides}
    flags = [x for k, v in settings.items() if k != "progress" for x in (f"--{k}", str(v))]
    return [*flags, "--progress" if settings["progress"] else "--no-progress"]


def cli_env(tmp_path: Path, hide: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a ``train_cli.py`` subprocess: one OpenMP thread, and the modules
    ``hide`` not installed (a ``sitecustomize`` written under ``tmp_path``)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if hide:
        env = hiding_env(tmp_path / "hide-modules", hide, env)
    return env


def run_cli(
    args: list[str],
    cwd: Path,
    *,
    hide: tuple[str, ...] = (),
    torchrun: int = 0,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``python train_cli.py ARGS`` (or ``torchrun --standalone --nproc_per_node N
    train_cli.py ARGS`` with ``torchrun=N``) in ``cwd``, with the modules ``hide`` not
    installed; a run that outlives ``timeout`` seconds fails the test (``TimeoutExpired``)."""
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
        launcher += [str(torchrun)]
    return subprocess.run(
        [*launcher, str(ROOT / "train_cli.py"), *args],
        cwd=cwd,
        env=cli_env(cwd, hide),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_line(text: str) -> str:
    """The last non-empty line of ``text`` ("" when there is none)."""
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one ``train_cli.py: error:`` line that ends ``proc``'s stderr (warnings may come
    before it, a traceback may not)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    line = last_line(proc.stderr)
    assert line.startswith("train_cli.py: error: "), proc.stderr
    assert proc.stderr.count("train_cli.py: error:") == 1, proc.stderr
    return line


def metrics_rows(folder: Path) -> int:
    """The epochs recorded in ``folder/metrics.jsonl`` (0 when there is none)."""
    path = folder / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def checkpoint_epoch(folder: Path) -> int:
    """The epochs done in ``folder/checkpoint_last.pt`` (read without the trainer's checks)."""
    import torch

    return int(torch.load(folder / "checkpoint_last.pt", weights_only=True)["epoch"])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` (not below it), with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def recorded_out(folder: Path) -> Any:
    """The run folder that ``folder/config.json`` records."""
    return json.loads((folder / "config.json").read_text())["out"]


def write_frames(root: Path, videos: int, frames: int) -> Path:
    """``videos`` folders of ``frames`` 24x20 PNG frames (a bright square moving at the video's
    speed) under ``root``, and their CSV ``root/split.csv`` (``v<i>,<frames>,<i % 2>``), which
    is returned."""
    from PIL import Image

    rows = []
    for v in range(videos):
        folder = root / f"v{v}"
        folder.mkdir(parents=True)
        for t in range(frames):
            img = Image.new("RGB", (24, 20), (30 * v % 255, 20, 40))
            img.paste((250, 250, 250), (2 + (t * (v + 1)) % 16, 4, 8 + (t * (v + 1)) % 16, 10))
            img.save(folder / f"{t:04d}.png")
        rows.append(f"v{v},{frames},{v % 2}")
    csv = root / "split.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv
