"""The benchmark suite runs: each table at tiny sizes, and the README writer; every entry point
answers ``--help`` and, without an optional dependency it needs, ends in one line naming the
extra before any work."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hidden_modules import hiding_env

from benchmarks import __main__ as suite
from benchmarks import attention, core, pairwise
from benchmarks._common import Requirement, exit_if_missing
from poincare._optional import MissingDependencyError


def test_core_rows_cover_every_op() -> None:
    rows = core.run(64, 8, torch.float32, 1)
    assert [r["op"] for r in rows] == list(core._cases(object()))
    for r in rows:
        assert isinstance(r["ratio"], float) and r["ratio"] > 0
    table = core.format_rows(rows)
    assert table.count("\n") == len(rows) + 1 and "`transp`" in table


def test_pairwise_and_attention_tables() -> None:
    rows = pairwise.run((8, 16), 4, torch.float64, 1)
    assert [r["n"] for r in rows] == [8, 16]
    t_rows = attention.time_rows(1, 16, 2, [8], 1)
    impls = {r["impl"] for r in t_rows}
    assert impls == {"sdpa", "mha", "cosh", "distance", "squared"}
    sdpa = next(r for r in t_rows if r["impl"] == "sdpa")
    assert sdpa["vs_sdpa"] == pytest.approx(1.0)
    assert "distance / sdpa" in attention.format_time_rows(t_rows)


def test_memory_rows_measure_each_implementation_in_a_process() -> None:
    rows = attention.memory_rows(1, 16, 2, 64, ("distance",))
    assert [r["impl"] for r in rows] == ["sdpa", "mha", "distance"]
    assert all(isinstance(r["peak_mib"], float) and r["peak_mib"] >= 0 for r in rows)


def test_write_readme_replaces_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{suite.BEGIN}\nold\n{suite.END}\noutro\n")
    suite.write_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{suite.BEGIN}\nnew table\n{suite.END}\noutro\n"
    (tmp_path / "bare.md").write_text("no markers")
    with pytest.raises(SystemExit, match="no <!-- benchmarks:begin -->"):
        suite.write_readme(tmp_path / "bare.md", "x")


def test_model_throughput_rows() -> None:
    from benchmarks import model

    rows = model.run(rounds=1, steps=1, warmup=0, variants=("transformer", "convgru"))
    assert [r["model"] for r in rows] == ["transformer", "convgru"]
    ratio = rows[0]["ratio"]
    assert isinstance(ratio, float) and ratio > 0
    assert isinstance(rows[1]["clips_per_s"], float)
    assert "clips/s vs convgru" in model.format_rows(rows)


ROOT = Path(__file__).resolve().parent.parent
OPTIONAL = ("numpy", "geoopt", "tqdm", "matplotlib", "mpmath", "hypothesis")
"""Every optional dependency of the repository that a benchmark might import."""
ENTRY_POINTS = (
    "benchmarks",
    "benchmarks.core",
    "benchmarks.pairwise",
    "benchmarks.attention",
    "benchmarks.model",
    "benchmarks.optimisers",
)
GEOOPT = ("the benchmark against geoopt", "dev")
VIDEO_MODEL = ("the video model's benchmark", "train")


@dataclass(frozen=True)
class Finished:
    """What a command left: its exit status, its output and how long it took."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


@pytest.fixture(scope="module")
def hider(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hide")


def run_hiding(hider: Path, hidden: tuple[str, ...], *args: str) -> Finished:
    """Run ``python *args`` at the repository root with ``hidden`` not importable."""
    env = hiding_env(hider, hidden)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    return Finished(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


MISSING = [
    ("benchmarks", "numpy", GEOOPT),
    ("benchmarks", "geoopt", GEOOPT),
    ("benchmarks", "tqdm", VIDEO_MODEL),
    ("benchmarks.core", "numpy", GEOOPT),
    ("benchmarks.core", "geoopt", GEOOPT),
    ("benchmarks.pairwise", "numpy", GEOOPT),
    ("benchmarks.pairwise", "geoopt", GEOOPT),
    ("benchmarks.model", "numpy", VIDEO_MODEL),
    ("benchmarks.model", "tqdm", VIDEO_MODEL),
    ("benchmarks.optimisers", "numpy", GEOOPT),
    ("benchmarks.optimisers", "geoopt", GEOOPT),
]
"""(entry point, a module it needs, (what needs it, the extra that brings it))."""


@pytest.mark.parametrize(
    ("entry", "hidden", "needs"),
    [pytest.param(*case, id=f"{case[0]}-without-{case[1]}") for case in MISSING],
)
def test_a_missing_dependency_ends_in_one_line_before_any_work(
    hider: Path, entry: str, hidden: str, needs: tuple[str, str]
) -> None:
    purpose, extra = needs
    done = run_hiding(hider, (hidden,), "-m", entry)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"python -m {entry}: error: {purpose} needs {hidden}, which is not installed: "
        f"pip install 'poincare-hyperbolic[{extra}]'"
    )
    assert "Traceback" not in done.stderr
    assert done.stdout == ""  # not even the header: nothing ran
    assert done.seconds < 30  # the default sizes take minutes once work starts


def test_the_attention_benchmark_needs_no_optional_dependency(hider: Path) -> None:
    args = ["--batch", "1", "--embed", "8", "--heads", "2", "--lengths", "4", "--rounds", "1"]
    done = run_hiding(hider, OPTIONAL, "-m", "benchmarks.attention", *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("| 1 | 8 | 2 | 4 | ")


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_help_needs_no_optional_dependency(hider: Path, entry: str) -> None:
    done = run_hiding(hider, OPTIONAL, "-m", entry, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {entry} [-h]")
    assert "Traceback" not in done.stderr


def test_exit_if_missing_names_the_extra() -> None:
    absent = Requirement(("_poincare_absent_module",), "dev", "this check")
    with pytest.raises(MissingDependencyError, match=r"this check needs _poincare_absent_module"):
        absent.check()
    present = Requirement(("json",), "dev", "this check")
    exit_if_missing("prog", [present])  # installed: returns
    with pytest.raises(SystemExit) as info:
        exit_if_missing("prog", [present, absent])
    assert info.value.code == (
        "prog: error: this check needs _poincare_absent_module, which is not installed: "
        "pip install 'poincare-hyperbolic[dev]'"
    )
