"""The benchmark suite runs: each table at tiny sizes, and the README writer; every entry point
answers ``--help`` and, without an optional dependency it needs, ends in one line naming the
extra before any work."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
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


TARGETS_TEST = replace(attention.TARGETS_QUICK, threads=(1,))
"""``--targets-quick`` at one thread count (each memory figure and each compilation costs a
fresh process or a trace per thread count; the loop over them is the same code)."""


@pytest.fixture(scope="module")
def target_tables() -> list[attention.TargetTable]:
    return list(attention.run_targets(TARGETS_TEST))


def _met_cells(table: attention.TargetTable) -> list[tuple[float, float, str]]:
    """(ratio, bound, met) of every ``target`` column, the ratio being the column before it."""
    found = []
    for row in table.rows:
        for i, name in enumerate(table.head):
            if name == "target":
                assert table.head[i + 1] == "met" and row[i].startswith("<= ")
                found.append((float(row[i - 1]), float(row[i].removeprefix("<= ")), row[i + 1]))
    return found


def test_the_target_grid_is_the_projects() -> None:
    grid = attention.TARGETS
    assert grid.threads == (1, 2) and grid.shapes == ((4, 128, 8), (32, 256, 8))
    assert grid.lengths == (256, 1024, 4096) and grid.memory == (1, 32, 4, 8192)
    assert grid.compiled == (4, 128, 8, 1024) and grid.backend == "inductor"
    assert attention.TIME_TARGETS == {"cosh": 1.3, "distance": 2.0, "squared": 2.0}
    assert attention.MEMORY_TARGET == 2.0
    assert attention.target_rounds(grid, 4, 128, 256) == (7, 1)
    assert attention.target_rounds(grid, 4, 128, 4096) == (2, 0)
    assert attention.target_rounds(grid, 32, 256, 4096) == (1, 0)


def test_the_target_tables_have_every_row(target_tables: list[attention.TargetTable]) -> None:
    grid = TARGETS_TEST
    time_t, memory_t, compile_t = target_tables
    keys = [
        [str(k) for k in (t, *shape, n)]
        for t in grid.threads
        for shape in grid.shapes
        for n in grid.lengths
    ]
    assert [row[:5] for row in time_t.rows] == keys
    assert time_t.head[7:] == tuple(
        c for s in ("cosh", "distance", "squared") for c in (f"{s} / sdpa", "target", "met")
    )
    scores = [[str(t), s] for t in grid.threads for s in ("cosh", "distance", "squared")]
    assert [[row[0], row[5]] for row in memory_t.rows] == scores
    assert all(row[1:5] == [str(k) for k in grid.memory] for row in memory_t.rows)
    assert "N = 256 (B=1, E=16, heads=2)" in memory_t.title
    assert [[row[0], row[6]] for row in compile_t.rows] == scores
    assert all(row[1:5] == [str(k) for k in grid.compiled] for row in compile_t.rows)
    for table in target_tables:
        assert all(len(row) == len(table.head) for row in table.rows)
        assert len(_met_cells(table)) == len(table.checks)
        lines = table.markdown().splitlines()
        assert len(lines) == 2 + len(table.rows) and lines[0].startswith("| threads | B | E |")


def test_the_met_column_follows_ratio_and_target(
    target_tables: list[attention.TargetTable],
) -> None:
    time_t, memory_t, compile_t = target_tables
    for table in target_tables:
        for ratio, bound, met in _met_cells(table):
            assert met == ("yes" if ratio <= bound else "no")
    assert {b for _, b, _ in _met_cells(time_t)} == {1.3, 2.0}
    assert {b for _, b, _ in _met_cells(memory_t)} == {2.0}
    eager = compile_t.head.index("eager / sdpa")
    for row in compile_t.rows:  # compiled / compiled sdpa against eager / sdpa, then against 1
        assert row[eager + 2] == f"<= {row[eager]}" and row[eager + 5] == "<= 1.00"


def test_the_summary_counts_the_met_targets(target_tables: list[attention.TargetTable]) -> None:
    cells = [m for t in target_tables for _, _, m in _met_cells(t)]
    assert attention.targets_summary(target_tables) == (
        f"targets met: {cells.count('yes')} of {len(cells)}"
    )
    table = attention.TargetTable("t", ("ratio", "target", "met", "ratio", "target", "met"))
    table.add(attention.Check(1.004, 1.0), attention.Check(1.3, 1.3))
    table.add(attention.Check(1.006, 1.0), attention.Check(0.5, 2.0))
    assert [row[2::3] for row in table.rows] == [["yes", "yes"], ["no", "yes"]]
    assert table.rows[1][:2] == ["1.01", "<= 1.00"]
    assert attention.targets_summary([table]) == "targets met: 3 of 4"


def test_targets_quick_prints_the_tables_then_the_summary(
    target_tables: list[attention.TargetTable],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grids: list[attention.TargetGrid] = []

    def run(grid: attention.TargetGrid) -> Iterator[attention.TargetTable]:
        grids.append(grid)
        return iter(target_tables)

    monkeypatch.setattr(attention, "run_targets", run)
    attention.main(["--targets-quick"])
    out = capsys.readouterr().out
    assert grids == [attention.TARGETS_QUICK]
    for table in target_tables:
        assert f"**{table.title}**\n\n{table.markdown()}\n" in out
    assert out.splitlines()[-1] == attention.targets_summary(target_tables)


def test_write_readme_puts_the_targets_between_the_markers(
    target_tables: list[attention.TargetTable], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(attention, "run_targets", lambda grid: iter(target_tables))
    parts = suite.attention_tables(quick=True, compiled=False, devices=["cpu"])
    body = "\n".join(f"**{title}**\n\n{text}\n" for title, text in parts)
    readme = tmp_path / "README.md"
    original = (ROOT / "README.md").read_text()
    readme.write_text(original)
    suite.write_readme(readme, body)
    written = readme.read_text()
    head, rest = written.split(suite.BEGIN)
    block, tail = rest.split(suite.END)
    assert head == original.split(suite.BEGIN)[0] and tail == original.split(suite.END)[1]
    for table in target_tables:
        assert f"**{table.title}**\n\n{table.markdown()}\n" in block
    assert block.rstrip().endswith(attention.targets_summary(target_tables))
    assert "Attention, peak memory" not in block  # the targets replace the old tables


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
    # mpmath is not hidden here: torch itself requires it (torch -> sympy -> mpmath), and its
    # custom operators (the fused attention kernel) import it when they run
    hidden = tuple(m for m in OPTIONAL if m != "mpmath")
    done = run_hiding(hider, hidden, "-m", "benchmarks.attention", *args)
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
