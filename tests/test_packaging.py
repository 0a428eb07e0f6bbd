"""Packaging: what the distribution installs, and the message a missing optional dependency gives.

The wheel itself (its file list, an install into a fresh virtual environment) is checked by
``.ci/check_wheel.sh``: building it is too slow for the test suite.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from poincare._optional import DISTRIBUTION, MissingDependencyError, optional_imports, require

ROOT = Path(__file__).resolve().parents[1]
ABSENT = "_poincare_test_absent_module"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter in the folder ``cwd``, the checkout on its path
    (warnings off: torch warns when numpy is blocked)."""
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- poincare._optional ------------------------------------------------------------------------


def test_require_returns_an_installed_module() -> None:
    assert require("json", extra="verify", purpose="a test") is json
    assert require("os.path", extra="verify", purpose="a test") is __import__("os").path


def test_require_names_the_extra_of_a_missing_module() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require(ABSENT, extra="verify", purpose="the accuracy report's plot")
    err = info.value
    assert isinstance(err, ModuleNotFoundError)
    assert err.name == ABSENT
    assert err.extra == "verify"
    assert str(err) == (
        f"the accuracy report's plot needs {ABSENT}, which is not installed: "
        f"pip install '{DISTRIBUTION}[verify]'"
    )
    assert isinstance(err.__cause__, ModuleNotFoundError)


def test_require_names_the_missing_package_of_a_submodule() -> None:
    with pytest.raises(MissingDependencyError, match=r"needs _poincare_test_absent_module,"):
        require(f"{ABSENT}.pyplot", extra="train", purpose="a plot")


def test_a_module_missing_inside_an_installed_one_passes_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken install is not reported as a missing extra: the original error comes through."""
    pkg = tmp_path / "_poincare_test_broken"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(f"import {ABSENT}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        require("_poincare_test_broken", extra="train", purpose="a test")
    assert not isinstance(info.value, MissingDependencyError)
    assert info.value.name == ABSENT
    with (
        pytest.raises(ModuleNotFoundError) as info2,
        optional_imports("_poincare_test_broken", extra="train", purpose="a test"),
    ):
        import _poincare_test_broken  # noqa: F401
    assert not isinstance(info2.value, MissingDependencyError)


def test_optional_imports_converts_only_the_named_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, ABSENT, None)  # None in sys.modules: "not installed"
    with (
        pytest.raises(MissingDependencyError, match=r"\[train\]'$"),
        optional_imports(ABSENT, extra="train", purpose="training"),
    ):
        __import__(ABSENT)
    with (
        pytest.raises(ModuleNotFoundError) as info,
        optional_imports("numpy", extra="train", purpose="x"),
    ):
        __import__(ABSENT)
    assert not isinstance(info.value, MissingDependencyError)


def test_the_error_survives_pickling() -> None:
    """The accuracy report's workers send it back to the parent process."""
    err = MissingDependencyError("geoopt", "dev", "the accuracy report's --peer geoopt")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is MissingDependencyError
    assert (str(back), back.name, back.extra, back.purpose) == (
        str(err),
        "geoopt",
        "dev",
        err.purpose,
    )


# -- the import sites --------------------------------------------------------------------------


def test_the_training_curves_without_matplotlib_name_the_train_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.metrics import plot_curves

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # None in sys.modules: "not installed"
    with pytest.raises(MissingDependencyError, match=r"needs matplotlib, .*\[train\]'$"):
        plot_curves(tmp_path / "curves.png", [{"epoch": 1}])


def test_the_report_plot_without_matplotlib_names_the_verify_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from verification.report import plot_report

    report: Any = None  # never read: the import comes first
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingDependencyError, match=r"needs matplotlib, .*\[verify\]'$"):
        plot_report(report, tmp_path / "accuracy.png")


def test_train_cli_without_numpy_ends_in_one_line(tmp_path: Path) -> None:
    r = _run(
        "import runpy, sys; sys.modules['numpy'] = None; sys.argv = ['train_cli.py']; "
        f"runpy.run_path({str(ROOT / 'train_cli.py')!r}, run_name='__main__')",
        tmp_path,
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "train_cli.py: error: training needs numpy, which is not installed: "
        f"pip install '{DISTRIBUTION}[train]'"
    )
    assert not list(tmp_path.iterdir()), "nothing is written before the check"


@pytest.mark.parametrize("module", ["verification.report", "verification"])
def test_the_report_without_mpmath_ends_in_one_line(module: str, tmp_path: Path) -> None:
    r = _run(
        "import runpy, sys; sys.modules['mpmath'] = None; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)",
        tmp_path,
    )
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip() == (
        f"python -m {module}: error: the accuracy report needs mpmath, which is not installed: "
        f"pip install '{DISTRIBUTION}[verify]'"
    )


# -- what the distribution installs ------------------------------------------------------------

REPO_ONLY = {"models", "training", "verification", "benchmarks", "train_cli"}
OPTIONAL = {"mpmath", "hypothesis", "matplotlib", "tqdm", "numpy", "geoopt", "tensorboard"}


def test_importing_poincare_imports_torch_only(tmp_path: Path) -> None:
    """``poincare`` and ``poincare.nn`` import no repository package and no optional dependency
    beyond what torch itself imports (torch imports numpy and tqdm when they are installed)."""
    r = _run(
        "import json, sys, torch; before = set(sys.modules); import poincare, poincare.nn; "
        "print(json.dumps({'all': sorted({m.split('.')[0] for m in sys.modules}), "
        "'new': sorted({m.split('.')[0] for m in set(sys.modules) - before})}))",
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    loaded = json.loads(r.stdout)
    assert set(loaded["all"]) & (REPO_ONLY | (OPTIONAL - {"numpy", "tqdm"})) == set()
    assert set(loaded["new"]) & (REPO_ONLY | OPTIONAL) == set()


def _pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    return data


def _names(requirements: list[str]) -> set[str]:
    names = set()
    for req in requirements:
        match = re.match(r"[A-Za-z0-9_.-]+", req)
        assert match, req
        names.add(match.group(0).lower())
    return names


def test_the_distribution_installs_the_poincare_package_only() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert "packages" not in setuptools or set(setuptools["packages"]) == {"find"}
    assert "py-modules" not in setuptools
    assert setuptools["packages"]["find"]["include"] == ["poincare", "poincare.*"]
    assert setuptools["packages"]["find"].get("namespaces") is False
    assert setuptools["package-data"] == {"poincare": ["py.typed", "csrc/*.cpp"]}
    assert (ROOT / "poincare" / "csrc" / "lorentz_attention.cpp").is_file()
    assert (ROOT / "poincare" / "py.typed").is_file()
    assert (ROOT / "poincare" / "nn" / "__init__.py").is_file()


def test_each_extra_brings_what_its_code_imports() -> None:
    project = _pyproject()["project"]
    assert project["dependencies"] == ["torch>=2.1,<3"]
    extras = project["optional-dependencies"]
    assert set(extras) == {"verify", "train", "video", "tensorboard", "dev"}
    assert _names(extras["verify"]) >= {"mpmath", "hypothesis", "matplotlib"}
    assert _names(extras["train"]) >= {"numpy", "tqdm", "matplotlib"}
    assert _names(extras["tensorboard"]) == {"tensorboard"}
    assert _names(extras["video"]) == {"av", "pillow", "scikit-video"}
    assert f"{DISTRIBUTION}[verify,train,video,tensorboard]" in extras["dev"]
    assert _names(extras["dev"]) >= {"geoopt", "pytest", "mypy", "ruff"}
    # Every extra that an import site names exists.
    named = set()
    for folder in ("poincare", "training", "verification", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            named |= set(re.findall(r'\bextra="([^"]+)"', path.read_text("utf-8")))
    assert named, "no import site found"
    assert named <= set(extras), named - set(extras)
