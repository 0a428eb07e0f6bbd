"""Every documented use of ``train_cli.py``, run as a user runs it: in a subprocess, checking
its exit status, its last line and what the run folders hold afterwards (tiny settings).

The plain command, ``--resume``, ``--eval_only --resume`` and ``--probe --resume`` on a copied
and on a moved run folder; ``torchrun --nproc_per_node 2 train_cli.py``; and each optional
dependency of the trainer missing (one line naming its extra, before any work)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from tiny_config import (
    checkpoint_epoch,
    cli_args,
    last_line,
    metrics_rows,
    one_error_line,
    recorded_out,
    run_cli,
    snapshot,
)

from poincare._optional import DISTRIBUTION

# the summary line of a finished run; group 1: the epochs, group 2: the run folder
FINISHED = re.compile(
    r"finished (\d+) epochs? in (\S+): val top-1 [0-9.]+% top-5 [0-9.]+% \(chance [0-9.]+% / "
    r"[0-9.]+%\), non-finite steps skipped: 0"
)


def _finished(stdout: str) -> tuple[int, str]:
    """(epochs, folder) of the summary, which must be the last line of ``stdout``."""
    match = FINISHED.fullmatch(last_line(stdout))
    assert match is not None, stdout
    return int(match.group(1)), match.group(2)


def test_a_copied_and_a_moved_run_folder_continue_in_place(tmp_path: Path) -> None:
    """``python train_cli.py``, then ``--resume``, ``--eval_only --resume`` and ``--probe
    --resume``: a copy of a run folder resumes into the copy, a moved folder is evaluated and
    probed where it is now, and the folder where the run was made is never written (nor
    recreated). Without tensorboard installed the run is complete, with no events."""
    first = run_cli([*cli_args(epochs=1), "--out", "A"], tmp_path, hide=("tensorboard",))
    assert first.returncode == 0, first.stderr
    assert _finished(first.stdout) == (1, "A")
    assert not (tmp_path / "A" / "tensorboard").exists()
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    (tmp_path / "A").rename(tmp_path / "M")
    (tmp_path / "M" / "eval.json").unlink()  # written again below
    moved = snapshot(tmp_path / "M")

    resumed = run_cli(["--resume", "B", "--epochs", "2"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _finished(resumed.stdout) == (2, "B")
    b = tmp_path / "B"
    assert (checkpoint_epoch(b), metrics_rows(b), recorded_out(b)) == (2, 2, "B")
    assert torch.load(b / "checkpoint_last.pt", weights_only=True)["config"]["out"] == "B"

    evaluated = run_cli(["--eval_only", "--resume", "M"], tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert last_line(evaluated.stdout) == "written to M: eval.json"
    probed = run_cli(["--probe", "--resume", "M", "--probe_batches", "2"], tmp_path)
    assert probed.returncode == 0, probed.stderr
    assert last_line(probed.stdout) == "written to M: probe.json"

    m = tmp_path / "M"
    after = snapshot(m)
    assert set(after) == set(moved) | {"eval.json", "probe.json", "probe.png"}
    assert {k: after[k] for k in moved} == moved  # checkpoints, metrics, config unchanged
    assert (checkpoint_epoch(m), metrics_rows(m), recorded_out(m)) == (1, 1, "A")  # as it was made
    assert not (tmp_path / "A").exists()


def test_torchrun_exits_0_on_every_rank(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 train_cli.py``: both ranks exit 0 (torchrun's status is 0)
    and rank 0 alone prints the summary, the last line of stdout."""
    proc = run_cli([*cli_args(), "--out", "T"], tmp_path, torchrun=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _finished(proc.stdout) == (2, "T")
    assert proc.stdout.count("finished ") == 1
    t = tmp_path / "T"
    assert (checkpoint_epoch(t), metrics_rows(t)) == (2, 2)


# (hidden module, flags of the entry point that needs it, the extra, what needs it)
MISSING = [
    ("numpy", [], "train", "training"),
    ("tqdm", [], "train", "training"),
    ("matplotlib", [], "train", "the training curves' plot"),
    ("PIL", ["--dataset", "frames", "--data_root", "d", "--split_csv", "s"], "video", None),
    ("av", ["--dataset", "video", "--data_root", "d"], "video", None),
    ("tensorboard", ["--tensorboard"], "tensorboard", "--tensorboard"),
]


@pytest.mark.parametrize(
    ("module", "flags", "extra", "purpose"), MISSING, ids=[m[0] for m in MISSING]
)
def test_a_missing_extra_is_one_line_before_any_work(
    module: str, flags: list[str], extra: str, purpose: str | None, tmp_path: Path
) -> None:
    proc = run_cli([*cli_args(epochs=1), *flags, "--out", "R"], tmp_path, hide=(module,))
    assert proc.returncode == 2, proc.stderr
    needs = purpose if purpose is not None else f"--dataset {flags[1]}"
    assert one_error_line(proc) == (
        f"train_cli.py: error: {needs} needs {module}, which is not installed: "
        f"pip install '{DISTRIBUTION}[{extra}]'"
    )
    assert not (tmp_path / "R").exists()  # nothing was made
    assert proc.stdout == ""
