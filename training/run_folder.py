"""The run folder of a training run: its creation, its default name, its lock, its clean-up.

- :func:`prepare_run_folder` creates ``--out`` and proves it writable, or raises a one-line
  :class:`RunFolderError` (an existing file, a path under a file, a read-only or unwritable
  place, any other ``OSError``).
- :func:`default_run_folder` creates a fresh ``runs/<UTC time>`` (``-2``, ``-3``, ... when two
  runs start in the same second), atomically, so two processes never share one.
- :class:`RunLock` holds an exclusive ``flock`` on ``<folder>/.lock`` for the length of a run,
  so two runs never write the same checkpoints. The operating system drops the lock when its
  process ends, killed or not, so a stale ``.lock`` file never blocks a later run.
- :func:`remove_stale_temporaries` deletes what a writer killed in the middle of
  :func:`training.checkpoint.atomic_write_bytes` left behind.

Typical use, on the one process that writes the folder (rank 0 under ``torchrun``)::

    folder = prepare_run_folder(Path(config.out)) if config.out else default_run_folder()
    with RunLock(folder):
        remove_stale_temporaries(folder)
        ...  # train, writing checkpoints into folder
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import stat
import sys
import warnings
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from training.checkpoint import TEMPORARY_NAME

if sys.platform != "win32":
    import fcntl

__all__ = [
    "LOCK_NAME",
    "RunFolderError",
    "RunLock",
    "default_run_folder",
    "prepare_run_folder",
    "remove_stale_temporaries",
]

#: The lock file of a run folder (see :class:`RunLock`). It is never deleted: deleting a lock
#: file that another process has open would let two processes lock two different files.
LOCK_NAME = ".lock"

# Suffixes tried after ``runs/<time>`` before giving up (only reached if something keeps
# creating folders of those names).
_MAX_SUFFIX = 10_000

# The probe of :func:`prepare_run_folder` (``.run-folder-probe-<random>.tmp-<pid>``: unique
# across the threads of one process) is named like a temporary of ``atomic_write_bytes``
# (``.<name>.tmp-<pid>``), so that one left by a killed process is removed by
# :func:`remove_stale_temporaries` as well.
_PROBE_NAME = "run-folder-probe"

# errnos that mean "this place cannot be written"
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS}


class RunFolderError(RuntimeError):
    """The run folder cannot be used; the one-line message names the path and what to do."""


def _reason(e: OSError) -> str:
    """``Read-only file system (errno 30)``: the cause of ``e`` in words, with its errno."""
    text = e.strerror or (os.strerror(e.errno) if e.errno else "") or str(e) or type(e).__name__
    return f"{text} (errno {e.errno})" if e.errno else text


def _file_above(path: Path) -> Path | None:
    """The nearest of ``path`` and its ancestors that exists and is not a folder, if any."""
    for p in (path, *path.parents):
        try:
            mode = p.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:  # a name too long, a loop of links, no permission: not a file here
            return None
        return None if stat.S_ISDIR(mode) else p
    return None


def _error(path: Path, e: OSError, doing: str) -> RunFolderError:
    """The :class:`RunFolderError` of ``e``, raised while ``doing`` something to ``path``."""
    where = str(path)
    blocker = _file_above(path)
    if blocker == path:
        return RunFolderError(
            f"--out {where!r} is an existing file, not a folder; choose another --out or "
            "remove the file"
        )
    if blocker is not None or isinstance(e, NotADirectoryError):
        what = f"{str(blocker)!r} is a file" if blocker is not None else "a part of it is a file"
        return RunFolderError(
            f"run folder {where!r} cannot be created: {what}, not a folder; choose another --out"
        )
    if isinstance(e, PermissionError) or e.errno in _UNWRITABLE:
        return RunFolderError(
            f"run folder {where!r} is not writable ({doing}: {_reason(e)}); choose a writable "
            "--out or fix its permissions"
        )
    return RunFolderError(
        f"run folder {where!r} cannot be used ({doing}: {_reason(e)}); choose another --out"
    )


def prepare_run_folder(path: str | os.PathLike[str]) -> Path:
    """Create the run folder ``path`` (with its parents) and check that it can be written.

    Writability is tested by creating and removing a probe file in it (permission bits alone
    do not tell: root, ACLs, read-only mounts).

    Returns:
        ``path`` as a :class:`~pathlib.Path`, an existing writable folder.

    Raises:
        RunFolderError: ``path`` is an existing file; a part of ``path`` is a file; the place
            is read-only or not writable (``PermissionError``, ``EROFS``); any other
            ``OSError`` (its message and errno are quoted). One line naming ``path``.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _error(folder, e, "creating it") from e
    if not folder.is_dir():  # e.g. a dangling symbolic link
        raise RunFolderError(
            f"--out {str(folder)!r} exists but is not a folder; choose another --out"
        )
    probe = folder / f".{_PROBE_NAME}-{secrets.token_hex(4)}.tmp-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)
        raise _error(folder, e, "writing a file in it") from e
    return folder


def _utc_now() -> datetime:
    """The current time in UTC (the clock of :func:`default_run_folder`; tests replace it)."""
    return datetime.now(timezone.utc)


def default_run_folder(base: str | os.PathLike[str] = Path("runs")) -> Path:
    """Create and return a new folder ``<base>/<UTC YYYYmmdd-HHMMSS>``.

    When that name is taken (two runs started in the same second, or an older run), the
    suffixes ``-2``, ``-3``, ... are tried in turn. Each try is ``mkdir(exist_ok=False)``, which
    the file system performs atomically: two processes never get the same folder.

    Raises:
        RunFolderError: ``base`` cannot be created or written (see :func:`prepare_run_folder`),
            or another error while creating the folder.
    """
    root = prepare_run_folder(base)
    stamp = _utc_now().strftime("%Y%m%d-%H%M%S")
    for n in range(1, _MAX_SUFFIX + 1):
        folder = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(exist_ok=False)
        except FileExistsError:
            continue
        except OSError as e:
            raise _error(folder, e, "creating it") from e
        return folder
    raise RunFolderError(
        f"run folder {str(root / stamp)!r} and its suffixes up to -{_MAX_SUFFIX} are all "
        "taken; choose an --out"
    )


def _holder(text: str) -> str:
    """``pid 123`` (or ``pid 123 on host h``, ``pid unknown``) from a lock file's text."""
    pid = re.search(r"^pid (\d+)$", text, re.MULTILINE)
    host = re.search(r"^host (.+)$", text, re.MULTILINE)
    who = f"pid {pid.group(1)}" if pid else "pid unknown"
    if host and host.group(1) != socket.gethostname():
        who += f" on host {host.group(1)}"
    return who


class RunLock:
    """An exclusive lock on a run folder for the length of a run.

    ``acquire`` opens ``<folder>/.lock`` (creating it), takes ``fcntl.flock(LOCK_EX |
    LOCK_NB)`` on it and writes ``pid <pid>`` and ``host <name>`` into it; ``release`` empties
    and closes it (the file stays: see :data:`LOCK_NAME`). Use it as a context manager or call
    the two methods. The lock belongs to the open file: it is released when the process ends,
    however it ends (SIGKILL included), so a left-over ``.lock`` never blocks a later run. A
    second ``RunLock`` on the same folder fails even in the same process.

    Without ``fcntl`` (Windows), or where the file system does not support ``flock``
    (``ENOLCK``, ``EOPNOTSUPP``), the lock degrades to a marker: ``acquire`` still writes the
    pid and host, warns (``RuntimeWarning``) and succeeds, and :attr:`exclusive` is ``False``.

    Attributes:
        folder: the run folder.
        path: its lock file.
        exclusive: whether the operating system's lock is held (``False`` when degraded or
            released).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.exclusive = False
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether :meth:`acquire` succeeded and :meth:`release` has not been called since."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock; returns ``self``.

        Raises:
            RunFolderError: another run holds it (``run folder X is in use by another run
                (pid N); ...``), this object already holds it, or the lock file cannot be
                opened or written.
        """
        if self._fd is not None:
            raise RunFolderError(f"run folder {str(self.folder)!r} is already locked by this run")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _error(self.folder, e, f"opening its lock file {LOCK_NAME}") from e
        try:
            self.exclusive = self._lock(fd)
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"pid {os.getpid()}\nhost {socket.gethostname()}\n".encode())
        except BaseException:
            os.close(fd)
            self.exclusive = False
            raise
        self._fd = fd
        return self

    def _lock(self, fd: int) -> bool:
        """``flock`` ``fd`` without waiting: ``True`` when locked, ``False`` when locking is not
        available here; raises :class:`RunFolderError` when another process holds it."""
        if sys.platform == "win32":
            warnings.warn(
                f"run folder {str(self.folder)!r}: no file locks on this platform; nothing "
                "stops a second run from using the same folder",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        else:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                try:
                    os.lseek(fd, 0, os.SEEK_SET)
                    text = os.read(fd, 4096).decode("utf-8", "replace")
                except OSError:
                    text = ""
                raise RunFolderError(
                    f"run folder {str(self.folder)!r} is in use by another run ({_holder(text)}); "
                    "wait for it to finish or choose another --out"
                ) from e
            except OSError as e:
                if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise _error(self.folder, e, f"locking {LOCK_NAME}") from e
                warnings.warn(
                    f"run folder {str(self.folder)!r}: its file system does not support locks "
                    f"({_reason(e)}); nothing stops a second run from using the same folder",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return False
            return True

    def release(self) -> None:
        """Give the lock up (a no-op when not held). The lock file stays, emptied."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            if self.exclusive and sys.platform != "win32":
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self.exclusive = False
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # closing the descriptor releases the lock; a lost RunLock must not keep it
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporaries ``.<name>.tmp-<pid>`` of
    :func:`training.checkpoint.atomic_write_bytes` in ``folder`` (not in its subfolders).

    A process killed in the middle of an atomic write leaves its temporary behind (the target
    itself is intact). Call this only while holding the folder's :class:`RunLock` and before
    this process writes anything: then no writer exists whose temporary it could delete.
    Only regular files whose whole name matches the pattern are touched (not folders, not
    symbolic links).

    Returns:
        the removed paths, sorted.

    Raises:
        RunFolderError: ``folder`` cannot be listed, or a temporary cannot be removed.
    """
    root = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError as e:
        raise _error(root, e, "listing it") from e
    for entry in entries:
        if not TEMPORARY_NAME.fullmatch(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise _error(root, e, f"removing the stale temporary {entry.name}") from e
        removed.append(root / entry.name)
    return sorted(removed)
