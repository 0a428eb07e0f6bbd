"""Train the video future-prediction model: ``python train_cli.py --help`` lists the flags.

The plain command ``python train_cli.py`` (or ``python train_cli.py --fp64_hyper``) trains the
hyperbolic transformer on procedural sprite videos; the logic lives in :mod:`training`.
"""

from __future__ import annotations

from training.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
