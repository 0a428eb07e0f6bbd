"""Optional third-party dependencies: a missing one fails with a message naming its extra.

:mod:`poincare` itself needs torch only. The repository's packages (``training``,
``verification``, ``benchmarks``) import optional modules through :func:`require` (a module
object, for dynamic use) or inside :func:`optional_imports` (plain import statements, which keep
the modules' static types)::

    with optional_imports("numpy", extra="train", purpose="training"):
        import numpy as np

When such a module is not installed, the import fails with :class:`MissingDependencyError`,
a :class:`ModuleNotFoundError` whose message names the extra to install, e.g. ``training needs
numpy, which is not installed: pip install 'poincare-hyperbolic[train]'``. This module imports
nothing optional itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

__all__ = ["DISTRIBUTION", "MissingDependencyError", "optional_imports", "require"]

DISTRIBUTION = "poincare-hyperbolic"
"""The distribution name whose extras provide the optional dependencies."""


class MissingDependencyError(ModuleNotFoundError):
    """An optional dependency is not installed; the message names the extra that brings it.

    Attributes: ``name`` (the missing module, as for :class:`ModuleNotFoundError`), ``extra``
    (the extra of :data:`DISTRIBUTION` to install) and ``purpose`` (what needs the module).
    Picklable, so that it crosses process boundaries (``multiprocessing`` workers) intact.
    """

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        self.extra = extra
        self.purpose = purpose
        super().__init__(
            f"{purpose} needs {module}, which is not installed: "
            f"pip install '{DISTRIBUTION}[{extra}]'",
            name=module,
        )

    def __reduce__(self) -> tuple[type[MissingDependencyError], tuple[str, str, str]]:
        return (type(self), (self.name or "", self.extra, self.purpose))


def _missing_one_of(error: ModuleNotFoundError, modules: tuple[str, ...]) -> bool:
    """Whether ``error`` reports one of ``modules`` (or a package above one) as absent, rather
    than some other module missing inside an installed one."""
    name = error.name
    if not name:
        return False
    return any(m == name or m.startswith(name + ".") or name.startswith(m + ".") for m in modules)


@contextmanager
def optional_imports(*modules: str, extra: str, purpose: str) -> Iterator[None]:
    """Turn a :class:`ModuleNotFoundError` raised in the block for one of ``modules`` (dotted
    names; a parent package or a submodule of one counts too) into
    :class:`MissingDependencyError` naming ``extra``, chained to the original error.

    Any other error, including a module missing *inside* an installed dependency, passes
    through unchanged. ``purpose`` says what needs the modules ("the accuracy report's plot").
    """
    try:
        yield
    except MissingDependencyError:
        raise
    except ModuleNotFoundError as e:
        if not _missing_one_of(e, modules):
            raise
        raise MissingDependencyError(e.name or modules[0], extra, purpose) from e


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import and return ``module`` (a dotted name); if it, or a package above it, is not
    installed, raise :class:`MissingDependencyError` naming ``extra`` of
    :data:`DISTRIBUTION` and ``purpose``.

    Example: ``require("matplotlib", extra="verify", purpose="the accuracy report's plot")``.
    The module object is typed as :class:`types.ModuleType` only; code that uses the module's
    attributes with their types imports it inside :func:`optional_imports` instead.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if isinstance(e, MissingDependencyError) or not _missing_one_of(e, (module,)):
            raise
        raise MissingDependencyError(e.name or module, extra, purpose) from e
