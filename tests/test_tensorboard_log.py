"""TensorBoard logging of a run: event files read back with TensorBoard's own loader."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from poincare._optional import MissingDependencyError
from training import tensorboard_log
from training.tensorboard_log import TensorBoardLog, epoch_scalars, tensorboard_available

needs_tensorboard = pytest.mark.skipif(
    not tensorboard_available(), reason="tensorboard is not installed"
)


def _accumulator(folder: Path, **kwargs: Any) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0}, **kwargs)
    acc.Reload()
    return acc


def _series(acc: Any, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _enabled(tb: TensorBoardLog) -> bool:
    """``tb.enabled`` read afresh (not narrowed by an earlier assert)."""
    return tb.enabled


def _next_second() -> None:
    """Wait for the clock's next second: event files are named after their creation second
    (then a per-process counter, which does not sort numerically), and TensorBoard reads a
    folder's files in name order."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.02)


def _png(path: Path, size: tuple[int, int] = (24, 16)) -> None:
    from PIL import Image

    w, h = size
    image = Image.new("RGB", (w, h), (10, 200, 30))
    for x in range(w // 2):
        for y in range(h):
            image.putpixel((x, y), (250, 0, 0))
    image.save(path)


def test_module_import_does_not_import_tensorboard() -> None:
    code = (
        "import sys, training.tensorboard_log as t; "
        "assert 'tensorboard' not in sys.modules, 'tensorboard imported'; "
        "assert 'torch.utils.tensorboard' not in sys.modules; "
        "t.TensorBoardLog.open('.', False).scalars({'a': 1.0}, 0)"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


@needs_tensorboard
def test_scalars_and_image_round_trip(tmp_path: Path) -> None:
    png = tmp_path / "curves.png"
    _png(png)
    with TensorBoardLog.open(tmp_path, True) as tb:
        assert tb.enabled
        assert tb.log_dir == tmp_path / "tensorboard"
        tb.scalars({"loss": 2.5, "top1": 0.25, "note": "text", "flag": True, "none": None}, 1)
        tb.scalars({"loss": 2.0, "top1": torch.tensor(0.5), "lr": 1e-3}, 2, prefix="step/")
        tb.scalars({"loss": math.nan}, 3)
        tb.image_png("curves", png, 2)
        tb.image_png("absent", tmp_path / "missing.png", 2)  # skipped silently
    assert not _enabled(tb)  # closed
    tb.scalars({"loss": 1.0}, 9)  # after close: a no-op
    tb.close()  # twice: fine

    acc = _accumulator(tmp_path)
    tags = acc.Tags()
    assert set(tags["scalars"]) == {"loss", "top1", "step/loss", "step/top1", "step/lr"}
    loss = _series(acc, "loss")
    assert [s for s, _ in loss] == [1, 3]
    assert loss[0][1] == 2.5 and math.isnan(loss[1][1])
    assert _series(acc, "top1") == [(1, 0.25)]
    assert _series(acc, "step/loss") == [(2, 2.0)]
    assert _series(acc, "step/top1") == [(2, 0.5)]
    ((lr_step, lr),) = _series(acc, "step/lr")
    assert lr_step == 2 and lr == pytest.approx(1e-3)

    assert tags["images"] == ["curves"]
    (image,) = acc.Images("curves")
    assert (image.step, image.width, image.height) == (2, 24, 16)
    assert image.encoded_image_string.startswith(b"\x89PNG")

    import io

    from PIL import Image

    decoded = Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB")
    assert decoded.getpixel((0, 0)) == (250, 0, 0)
    assert decoded.getpixel((23, 15)) == (10, 200, 30)


@needs_tensorboard
def test_rgba_png_and_figure(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1], [1, 0])
    png = tmp_path / "plot.png"
    fig.savefig(png, transparent=True)  # RGBA
    with TensorBoardLog.open(tmp_path, None) as tb:
        tb.image_png("plot", png, 0)
        tb.figure("figure", fig, 1)
    assert not plt.fignum_exists(fig.number)  # closed by figure()
    acc = _accumulator(tmp_path)
    assert sorted(acc.Tags()["images"]) == ["figure", "plot"]
    (plot,) = acc.Images("plot")
    assert (plot.width, plot.height) == (100, 75)
    assert [e.step for e in acc.Images("figure")] == [1]


@needs_tensorboard
def test_purge_step_hides_the_previous_process_events_after_it(tmp_path: Path) -> None:
    # The first process logs steps 1..10, then stops; its checkpoint was at step 5.
    with TensorBoardLog.open(tmp_path, True) as tb:
        for s in range(1, 11):
            tb.scalars({"loss": float(s)}, s, prefix="step/")
    _next_second()
    # The resumed process logs steps 6.. again, marking the restart at step 6.
    with TensorBoardLog.open(tmp_path, True, purge_step=6) as tb:
        for s in range(6, 9):
            tb.scalars({"loss": 100.0 + s}, s, prefix="step/")
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 2

    expected = [(s, float(s)) for s in range(1, 6)] + [(s, 100.0 + s) for s in range(6, 9)]
    assert _series(_accumulator(tmp_path), "step/loss") == expected
    # Without the purge (what a reader ignoring the restart marker sees) the steps 6..10 of
    # the first process would come back, doubled.
    raw = _series(_accumulator(tmp_path, purge_orphaned_data=False), "step/loss")
    assert [s for s, _ in raw] == [*range(1, 11), 6, 7, 8]


@needs_tensorboard
def test_purge_step_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="purge_step"):
        TensorBoardLog.open(tmp_path, True, purge_step=-1)


def test_disabled_logger_writes_nothing(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = tmp_path / "x.png"
    _png(png)
    fig = plt.figure()
    with TensorBoardLog.open(tmp_path / "run", False) as tb:
        assert not tb.enabled
        assert tb.log_dir is None
        tb.scalars({"loss": 1.0}, 0)
        tb.image_png("x", png, 0)
        tb.figure("f", fig, 0)
        tb.flush()
    assert not plt.fignum_exists(fig.number)
    assert not (tmp_path / "run").exists()
    assert "disabled" in repr(tb)


def test_not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> Any:
        return None if name == "tensorboard" else real_find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    assert not tensorboard_available()
    # Left to the default: a disabled logger.
    tb = TensorBoardLog.open(tmp_path, None)
    assert not tb.enabled
    tb.scalars({"loss": 1.0}, 0)
    assert not (tmp_path / "tensorboard").exists()
    # Asked for: an error naming the extra.
    with pytest.raises(MissingDependencyError) as info:
        TensorBoardLog.open(tmp_path, True)
    assert info.value.extra == "tensorboard"
    assert info.value.name == "tensorboard"
    assert "poincare-hyperbolic[tensorboard]" in str(info.value)
    assert isinstance(info.value, ModuleNotFoundError)


def test_not_installed_through_the_module_check(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tensorboard_log, "tensorboard_available", lambda: False)
    assert not TensorBoardLog.open(tmp_path, None).enabled
    with pytest.raises(MissingDependencyError, match=r"\[tensorboard\]"):
        TensorBoardLog.open(tmp_path, True)


def test_epoch_scalars_mapping() -> None:
    record: dict[str, Any] = {
        "epoch": 3,
        "step": 120,
        "lr": 2e-4,
        "train_loss": 1.5,
        "train_top1": 0.4,
        "train_skipped": 1,
        "val_loss": 1.7,
        "val_top1": 0.35,
        "val_top5": 0.8,
        "chance_top1": 1 / 64,
        "chance_top5": 5 / 64,
        "val_candidates": 64.0,
        "val_group_top1": 0.6,
        "chance_group_top1": 0.25,
        "val_skipped": 0.0,
        "curvature": 0.9,
        "epoch_seconds": 12.5,
        "clips_per_second": 80.0,
        "new_metric": 7,
        "name": "text",
        "improved": True,
        "nothing": None,
        "nan_loss": math.nan,
    }
    out = epoch_scalars(record)
    assert out == {
        "epoch": 3.0,
        "lr": 2e-4,
        "loss/train": 1.5,
        "accuracy/train_top1": 0.4,
        "skipped/train": 1.0,
        "loss/val": 1.7,
        "accuracy/val_top1": 0.35,
        "accuracy/val_top5": 0.8,
        "accuracy/chance_top1": 1 / 64,
        "accuracy/chance_top5": 5 / 64,
        "data/val_candidates": 64.0,
        "accuracy/val_group_top1": 0.6,
        "accuracy/chance_group_top1": 0.25,
        "skipped/val": 0.0,
        "curvature": 0.9,
        "speed/epoch_seconds": 12.5,
        "speed/clips_per_second": 80.0,
        "other/new_metric": 7.0,
        "other/nan_loss": pytest.approx(math.nan, nan_ok=True),
    }
    assert all(type(v) is float for v in out.values())
    assert epoch_scalars({}) == {}


def test_epoch_scalars_cover_the_metric_columns() -> None:
    from training.metrics import METRIC_COLUMNS

    tags = epoch_scalars({k: 1.0 for k in METRIC_COLUMNS})
    assert not [t for t in tags if t.startswith("other/")]
    assert len(tags) == len(METRIC_COLUMNS) - 1  # all but the step
