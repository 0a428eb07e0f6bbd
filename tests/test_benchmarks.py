"""The benchmark suite runs: each table at tiny sizes, and the README writer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from benchmarks import __main__ as suite
from benchmarks import attention, core, pairwise


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
