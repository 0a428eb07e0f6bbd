"""Tests of a checkpoint's contents (validate_checkpoint, set_rng_state) and of failed writes."""

from __future__ import annotations

import copy
import errno
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from training import checkpoint
from training.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    atomic_write_text,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
    validate_checkpoint,
)
from training.config import TrainConfig
from training.trainer import WarmupCosine, build_model, build_optimizer

TINY = TrainConfig(
    img_dim=16,
    seq_len=2,
    num_seq=3,
    pred_step=1,
    feature_dim=8,
    encoder_width=4,
    num_heads=2,
    transformer_layers=1,
    batch_size=4,
    train_batches=3,
    val_batches=1,
    epochs=2,
    warmup_steps=2,
    progress=False,
    device="cpu",
)
STEPS = TINY.train_batches


class Run:
    """A model, its optimiser (with state: one step taken) and its scheduler, as in the loop."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = build_model(TINY)
        self.optimizer = build_optimizer(self.model, TINY)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, WarmupCosine(TINY.warmup_steps, TINY.epochs * STEPS)
        )
        for p in self.model.parameters():
            p.grad = torch.full_like(p, 0.01)
        self.optimizer.step()
        self.scheduler.step()

    def payload(self, epoch: int = 1, batch: int = 1) -> dict[str, Any]:
        """Shaped like ``payload()`` of ``training.trainer._run``."""
        return {
            "config": TINY.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": get_rng_state(),
            "epoch": epoch,
            "batch": batch,
            "step": epoch * STEPS + batch,
            "history": [{"epoch": 1, "val_top1": 0.5}] * epoch,
            "best_top1": 0.5,
            "nonfinite_total": 0,
            "nonfinite_streak": 0,
            "epoch_accumulators": {"loss": 1.0, "top1": 0.0, "n": 1.0, "skipped": 0.0},
        }


@pytest.fixture(scope="module")
def run() -> Run:
    return Run()


def _saved(tmp_path: Path, payload: dict[str, Any], name: str = "ck.pt") -> dict[str, Any]:
    path = tmp_path / name
    save_checkpoint(path, payload)
    return load_checkpoint(path)


def _refused(ckpt: dict[str, Any], run: Run, *, steps_per_epoch: int | None = STEPS) -> str:
    with pytest.raises(CheckpointError) as e:
        validate_checkpoint(ckpt, run.model, run.optimizer, steps_per_epoch=steps_per_epoch)
    text = str(e.value)
    assert "\n" not in text
    assert text.startswith(f"checkpoint {ckpt['path']!r} does not fit this run: ")
    return text


def test_a_good_checkpoint_passes_and_loads(tmp_path: Path, run: Run) -> None:
    ckpt = _saved(tmp_path, run.payload())
    validate_checkpoint(ckpt, run.model, run.optimizer, steps_per_epoch=STEPS)
    fresh = Run()
    validate_checkpoint(ckpt, fresh.model, fresh.optimizer, steps_per_epoch=STEPS)
    fresh.model.load_state_dict(ckpt["model"])
    fresh.optimizer.load_state_dict(ckpt["optimizer"])
    fresh.scheduler.load_state_dict(ckpt["scheduler"])
    set_rng_state(ckpt["rng"], path=ckpt["path"])
    # a fresh optimiser without state fits as well (its state is filled by the first step)
    empty = build_optimizer(fresh.model, TINY)
    validate_checkpoint(ckpt, fresh.model, empty)
    # a stop at the very end of an epoch (batch == steps per epoch)
    end = _saved(tmp_path, run.payload(epoch=0, batch=STEPS), "end.pt")
    validate_checkpoint(end, run.model, run.optimizer, steps_per_epoch=STEPS)


Mutation = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Mutation:
    def mutate(p: dict[str, Any]) -> None:
        p[key] = value

    return mutate


def _model(mutate: Callable[[dict[str, torch.Tensor]], None]) -> Mutation:
    def apply(p: dict[str, Any]) -> None:
        mutate(p["model"])

    return apply


def _optimizer(mutate: Callable[[dict[str, Any]], None]) -> Mutation:
    def apply(p: dict[str, Any]) -> None:
        mutate(p["optimizer"])

    return apply


def _rng(mutate: Callable[[dict[str, Any]], None]) -> Mutation:
    def apply(p: dict[str, Any]) -> None:
        mutate(p["rng"])

    return apply


def _merge_groups(o: dict[str, Any]) -> None:
    first, second = o["param_groups"]
    o["param_groups"] = [{**first, "params": first["params"] + second["params"]}]


def _drop_a_param(o: dict[str, Any]) -> None:
    o["param_groups"][1]["params"] = o["param_groups"][1]["params"][:-1]


def _bad_exp_avg(o: dict[str, Any]) -> None:
    o["state"][0]["exp_avg"] = torch.zeros(2, 2)


def _unknown_state(o: dict[str, Any]) -> None:
    o["state"][999] = {"step": torch.tensor(1.0)}


def _drop_scheduler_last_epoch(p: dict[str, Any]) -> None:
    del p["scheduler"]["last_epoch"]


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        del d[key]

    return mutate


def _put(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(d: dict[str, Any]) -> None:
        d[key] = value

    return mutate


W = "encoder.net.0.weight"  # shape (4, 3, 1, 3, 3)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(
            _model(_put(W, torch.zeros(5, 3, 1, 3, 3))),
            f"tensor {W!r} has another shape (checkpoint (5, 3, 1, 3, 3), "
            "this model (4, 3, 1, 3, 3))",
            id="tensor-of-wrong-shape",
        ),
        pytest.param(
            _model(_put("ball.c_value", torch.tensor(1.0, dtype=torch.float32))),
            "tensor 'ball.c_value' has another dtype (checkpoint torch.float32, "
            "this model torch.float64)",
            id="tensor-of-wrong-dtype",
        ),
        pytest.param(
            _model(_delete(W)),
            f"the model's state lacks 1 tensor(s) ({W!r})",
            id="missing-key",
        ),
        pytest.param(
            _model(_put("head.extra.weight", torch.zeros(3))),
            "the model's state has 1 unexpected tensor(s) ('head.extra.weight')",
            id="unexpected-key",
        ),
        pytest.param(
            _model(_put(W, [1, 2])),
            f"model entry {W!r} is list [1, 2], not a tensor",
            id="not-a-tensor",
        ),
        pytest.param(
            _optimizer(_merge_groups),
            "the optimizer has another number of parameter groups (checkpoint 1, this run 2)",
            id="wrong-number-of-param-groups",
        ),
        pytest.param(
            _optimizer(_drop_a_param),
            "optimizer group 1 has another number of parameters",
            id="wrong-number-of-params-in-a-group",
        ),
        pytest.param(
            _optimizer(_bad_exp_avg),
            "optimizer state 'exp_avg' of parameter 0 (group 0) has another shape "
            "(checkpoint (2, 2), this parameter (4, 3, 1, 3, 3))",
            id="optimizer-state-of-wrong-shape",
        ),
        pytest.param(
            _optimizer(_unknown_state),
            "the optimizer has state for parameter 999, which no group holds",
            id="optimizer-state-of-an-unknown-parameter",
        ),
        pytest.param(
            _set("epoch", "1"),
            "'epoch' is str '1', not an int",
            id="epoch-stored-as-a-string",
        ),
        pytest.param(_set("batch", True), "'batch' is bool True, not an int", id="batch-a-bool"),
        pytest.param(_set("step", -1), "'step' is -1, not >= 0", id="negative-step"),
        pytest.param(
            _set("batch", STEPS + 1),
            f"'batch' is {STEPS + 1}, more than the {STEPS} of an epoch",
            id="batch-beyond-the-epoch",
        ),
        pytest.param(
            _set("step", 2),
            f"'step' is 2, not epoch * steps per epoch + batch = 1 * {STEPS} + 1",
            id="inconsistent-step",
        ),
        pytest.param(
            _set("history", {"epoch": 1}),
            "'history' is dict {'epoch': 1}, not a list of dicts",
            id="history-not-a-list",
        ),
        pytest.param(
            _set("history", [1.0]),
            "'history' is list [1.0], not a list of dicts",
            id="history-of-numbers",
        ),
        pytest.param(
            _set("nonfinite_total", 1.5), "'nonfinite_total' is float 1.5", id="float-counter"
        ),
        pytest.param(
            _set("epoch_accumulators", {"loss": "x"}),
            "'epoch_accumulators' is dict {'loss': 'x'}, not a dict of numbers",
            id="accumulators-not-numbers",
        ),
        pytest.param(
            _set("scheduler", [1]), "'scheduler' is list [1], not a state dict", id="scheduler"
        ),
        pytest.param(
            _drop_scheduler_last_epoch,
            "the scheduler's 'last_epoch' is NoneType None, not an int >= -1",
            id="scheduler-without-last-epoch",
        ),
        pytest.param(
            _set("rng", {}),
            "the generator states 'rng' are empty (expected 'torch', 'python', 'numpy')",
            id="empty-rng",
        ),
        pytest.param(
            _rng(_put("numpy", {})),
            "the generator state 'rng.numpy' is empty",
            id="empty-rng-entry",
        ),
        pytest.param(
            _rng(_delete("python")),
            "the generator state 'rng.python' is missing",
            id="missing-rng-entry",
        ),
        pytest.param(
            _rng(_put("torch", torch.zeros(3, dtype=torch.uint8))),
            "the generator state 'rng.torch' is malformed (expected a torch.uint8 tensor",
            id="rng-torch-of-wrong-size",
        ),
        pytest.param(
            _rng(_put("python", {"version": 3, "state": torch.zeros(3), "gauss": None})),
            "the generator state 'rng.python' is malformed (a torch.float32 tensor of shape (3,)",
            id="rng-python-of-wrong-size",
        ),
        pytest.param(
            _rng(
                _put(
                    "numpy",
                    {"keys": torch.zeros(624, dtype=torch.int64), "pos": "0", "has_gauss": 0},
                )
            ),
            "the generator state 'rng.numpy' is malformed (it lacks ['cached_gaussian'])",
            id="rng-numpy-incomplete",
        ),
    ],
)
def test_corrupt_contents_are_one_line_errors(
    tmp_path: Path, run: Run, mutate: Mutation, expected: str
) -> None:
    payload = copy.deepcopy(run.payload())
    mutate(payload)
    ckpt = _saved(tmp_path, payload)
    assert expected in _refused(ckpt, run)


def test_many_problems_are_summed_up(tmp_path: Path, run: Run) -> None:
    payload = copy.deepcopy(run.payload())
    for key in list(payload["model"])[:5]:
        payload["model"][key] = torch.zeros(7)
    text = _refused(_saved(tmp_path, payload), run)
    assert text.count("has another shape") == 3 and "(and 2 more problems)" in text


def _first_matrix(payload: dict[str, Any]) -> tuple[str, torch.Tensor]:
    """The name and tensor of the payload's first weight matrix (no tensor shared by keys)."""
    return next((k, t) for k, t in payload["model"].items() if t.dim() > 1)


def _optimizer_entry(payload: dict[str, Any], name: str) -> torch.Tensor:
    """The optimiser state ``name`` of the payload's first parameter."""
    t: torch.Tensor = payload["optimizer"]["state"][0][name]
    return t


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        pytest.param(
            lambda p: _first_matrix(p)[1].view(-1)[:2].fill_(float("nan")),
            "model tensor '{first}' has 2 of {numel} non-finite values",
            id="nan-weights",
        ),
        pytest.param(
            lambda p: _optimizer_entry(p, "exp_avg").view(-1)[:1].fill_(float("inf")),
            "optimizer state 'exp_avg' of parameter 0 has 1 of {moments} non-finite values",
            id="infinite-first-moment",
        ),
        pytest.param(
            lambda p: _optimizer_entry(p, "exp_avg_sq").view(-1)[:3].mul_(-1.0),
            "optimizer state 'exp_avg_sq' of parameter 0 has 3 of {moments} negative values, "
            "which it never has",
            id="negative-second-moment",
        ),
        pytest.param(
            lambda p: _optimizer_entry(p, "step").fill_(-1.0),
            "optimizer state 'step' of parameter 0 has 1 of 1 negative values, which it never has",
            id="negative-step",
        ),
    ],
)
def test_values_no_run_writes_are_refused_on_loading(
    tmp_path: Path, run: Run, damage: Callable[[dict[str, Any]], object], expected: str
) -> None:
    """A checkpoint with a sound archive but values that training never saves is refused by
    ``load_checkpoint``, before anything reads it, in one line that names the tensor."""
    payload = copy.deepcopy(run.payload())
    damage(payload)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, payload)
    first, weight = _first_matrix(payload)
    moments = _optimizer_entry(payload, "exp_avg").numel()
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == f"checkpoint {str(path)!r} is corrupt: " + expected.format(
        first=first, numel=weight.numel(), moments=moments
    )


def test_counters_are_only_checked_against_the_epoch_when_asked(tmp_path: Path, run: Run) -> None:
    ckpt = _saved(tmp_path, {**run.payload(), "step": 2})
    validate_checkpoint(ckpt, run.model, run.optimizer)
    validate_checkpoint(ckpt, run.model, run.optimizer, path="elsewhere.pt", steps_per_epoch=None)
    with pytest.raises(CheckpointError, match=r"^checkpoint 'elsewhere\.pt' does not fit"):
        validate_checkpoint(ckpt, run.model, run.optimizer, path="elsewhere.pt", steps_per_epoch=3)


def test_a_model_of_other_settings_is_refused(tmp_path: Path, run: Run) -> None:
    ckpt = _saved(tmp_path, run.payload())
    other = build_model(TrainConfig(**{**TINY.to_dict(), "feature_dim": 16}))
    with pytest.raises(CheckpointError) as e:
        validate_checkpoint(ckpt, other, build_optimizer(other, TINY))
    assert "has another shape" in str(e.value) and "\n" not in str(e.value)


def test_a_config_that_is_not_a_dict_is_refused_on_loading(tmp_path: Path, run: Run) -> None:
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {**run.payload(), "config": ["hyperbolic", True]})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert str(e.value) == (
        f"checkpoint {str(path)!r} is corrupt: its 'config' is list ['hyperbolic', True], "
        "not a dict of settings"
    )


# --- set_rng_state -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({}, "'rng' are empty"),
        ({"python": {}, "numpy": {}}, "'rng.torch' is missing"),
        ([], "'rng' is list [], not a dict"),
        ({"torch": torch.get_rng_state(), "python": {}, "numpy": {}}, "'rng.python' is empty"),
        ({"torch": "abc", "python": {"version": 3}, "numpy": {"pos": 1}}, "'rng.torch'"),
    ],
)
def test_set_rng_state_refuses_malformed_states(state: Any, expected: str) -> None:
    before = torch.get_rng_state()
    py_before = random.getstate()
    with pytest.raises(CheckpointError, match=r"^cannot restore the generators: ") as e:
        set_rng_state(state)
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert torch.equal(torch.get_rng_state(), before) and random.getstate() == py_before
    with pytest.raises(CheckpointError, match=r"^checkpoint 'x\.pt' does not fit this run: "):
        set_rng_state(state, path="x.pt")


def test_set_rng_state_round_trip_without_cuda_entry() -> None:
    state = get_rng_state()
    del state["cuda"]
    a = (torch.rand(2), random.random())
    set_rng_state(state)
    b = (torch.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


# --- failed writes -----------------------------------------------------------------------------


def _disk_full_after_half(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def test_a_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoint_last.pt"
    save_checkpoint(target, run.payload())
    old = target.read_bytes()
    monkeypatch.setattr(checkpoint, "_write_file", _disk_full_after_half)
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(target, run.payload(epoch=2, batch=0))
    assert isinstance(e.value, CheckpointError)
    assert str(e.value) == (
        f"could not write checkpoint {str(target)!r}: No space left on device (errno 28); "
        "the previous checkpoint is intact"
    )
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pt"]  # no temporary
    assert load_checkpoint(target)["epoch"] == 1


def test_a_failed_first_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "_write_file", _disk_full_after_half)
    target = tmp_path / "config.json"
    with pytest.raises(CheckpointWriteError) as e:
        atomic_write_text(target, "{}\n")
    assert str(e.value) == (
        f"could not write file {str(target)!r}: No space left on device (errno 28); "
        "no partial file was left"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoint_best.pt"
    target.write_bytes(b"old")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CheckpointWriteError, match=r"Input/output error \(errno 5\); the previous"):
        checkpoint.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_best.pt"]
