"""What the tests of missing optional dependencies share (a helper, not a test): an environment
in which chosen modules fail to import, as a package that is not installed does.

A ``sitecustomize.py`` written into a folder put first on ``PYTHONPATH`` installs, at start-up
of every Python process started with that environment, a meta-path finder that raises
``ModuleNotFoundError`` for each module named in ``POINCARE_HIDE`` (comma-separated top-level
names) and for its submodules, and marks each top-level name absent in ``sys.modules`` (so that
``importlib.util.find_spec`` answers None, as for a package that is not installed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

_SITECUSTOMIZE = """\
import importlib.abc, os, sys

_HIDDEN = {m for m in os.environ.get("POINCARE_HIDE", "").split(",") if m}


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Hide())
# as for a package that is not installed, importlib.util.find_spec answers None (torch probes
# its optional dependencies that way) while an import raises ModuleNotFoundError
for _name in _HIDDEN:
    sys.modules[_name] = None
"""


def hiding_env(
    folder: Path, hidden: tuple[str, ...], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default: this process's environment) with the modules ``hidden`` made
    unimportable for the processes started with it; ``folder`` receives the
    ``sitecustomize.py`` (created if missing). An empty ``hidden`` hides nothing."""
    env = dict(os.environ if base is None else base)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    env["POINCARE_HIDE"] = ",".join(hidden)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    return env
