"""What every benchmark shares: its optional dependencies, the machine header and interleaved
timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib import metadata

import torch

from poincare._optional import MissingDependencyError, optional_imports, require


@dataclass(frozen=True)
class Requirement:
    """Optional modules that a benchmark imports, the extra that brings them, and what needs
    them (the start of the message when one is missing)."""

    modules: tuple[str, ...]
    extra: str
    purpose: str

    def check(self) -> None:
        """Import every module, in order; raise :class:`MissingDependencyError` naming the
        extra for the first one that is not installed."""
        for module in self.modules:
            require(module, extra=self.extra, purpose=self.purpose)

    def imports(self) -> AbstractContextManager[None]:
        """A block whose import statements of these modules fail with
        :class:`MissingDependencyError` naming the extra."""
        return optional_imports(*self.modules, extra=self.extra, purpose=self.purpose)


GEOOPT_PEER = Requirement(("numpy", "geoopt"), "dev", "the benchmark against geoopt")
"""geoopt, the peer of the core ops and of ``pairwise_dist`` (it imports numpy itself)."""


def exit_if_missing(prog: str, requirements: Sequence[Requirement]) -> None:
    """Check ``requirements`` before any work starts: when a module is missing, exit with one
    line on stderr, ``<prog>: error: <what> needs <module>, which is not installed: pip install
    '...[<extra>]'``, and status 1."""
    try:
        for requirement in requirements:
            requirement.check()
    except MissingDependencyError as err:
        raise SystemExit(f"{prog}: error: {err}") from None


def versions() -> str:
    """One line: Python, torch, geoopt (when installed), the CPU and its threads, any GPU."""
    try:
        geoopt = metadata.version("geoopt")
    except metadata.PackageNotFoundError:
        geoopt = "not installed"
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (
        f"python {platform.python_version()}, torch {torch.__version__}, geoopt {geoopt}; "
        f"{platform.system()} {cpu}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}; GPU {gpu}"
    )


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved(
    fns: Mapping[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Seconds of each ``fns[name]()`` per round, the order rotating from round to round.

    ``warmup`` untimed calls of each come first. Interleaving puts every implementation under
    the same slow drifts of a shared machine's load; report medians of per-round ratios
    (:func:`median_ratio`).
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    synchronize(device)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            fns[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def median_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """The median over rounds of ``a[i] / b[i]``."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))
