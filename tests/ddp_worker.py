"""A training run for ``torchrun`` in the tests: ``torchrun ... tests/ddp_worker.py OUT JSON``.

Trains with ``TrainConfig(**json.loads(JSON), out=OUT)`` through :func:`training.trainer.run`
and writes what the test compares: every rank's final weights (``OUT-ranks/weights_rank<r>.pt``) and
its metrics history (``OUT-ranks/history_rank<r>.json``). With ``DDP_WORKER_STOP_AT=K`` in the
environment, the run stops after step ``K`` as a signal would (checkpoint, then return). Not a
test module (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from training.config import TrainConfig
from training.trainer import run


def main() -> None:
    out, settings = sys.argv[1], json.loads(sys.argv[2])
    rank = int(os.environ.get("RANK", "0"))
    stop_at = int(os.environ.get("DDP_WORKER_STOP_AT", "0"))
    hook = (lambda step: step >= stop_at) if stop_at else None
    result = run(TrainConfig(**{**settings, "out": out}), on_step=hook)
    assert result.model is not None
    folder = Path(out + "-ranks")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(result.model.state_dict(), folder / f"weights_rank{rank}.pt")
    (folder / f"history_rank{rank}.json").write_text(json.dumps(result.history))


if __name__ == "__main__":
    main()
