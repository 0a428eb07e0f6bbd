"""Tests of the run folder: creation errors, unique default names, the lock, stale temporaries."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from training import run_folder
from training.checkpoint import atomic_write_bytes, temporary_path
from training.run_folder import (
    LOCK_NAME,
    RunFolderError,
    RunLock,
    default_run_folder,
    prepare_run_folder,
    remove_stale_temporaries,
)

ROOT = Path(__file__).resolve().parents[1]


def _one_line(e: pytest.ExceptionInfo[RunFolderError], path: Path) -> str:
    text = str(e.value)
    assert "\n" not in text
    assert str(path) in text
    return text


# --- prepare_run_folder ------------------------------------------------------------------------


def test_prepare_creates_the_folder_and_its_parents(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b" / "run"
    assert prepare_run_folder(out) == out
    assert out.is_dir()
    assert list(out.iterdir()) == []  # the probe is gone
    assert prepare_run_folder(str(out)) == out  # an existing folder is fine


def test_an_existing_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunFolderError) as e:
        prepare_run_folder(f)
    assert "is an existing file" in _one_line(e, f)
    assert f.read_text() == "x"


def test_a_path_under_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    for out in (f / "run", f / "deeper" / "run"):
        with pytest.raises(RunFolderError) as e:
            prepare_run_folder(out)
        text = _one_line(e, out)
        assert f"{str(f)!r} is a file" in text and "--out" in text


def test_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        probe = ro / "probe"
        try:
            probe.touch()
        except PermissionError:
            pass
        else:  # root, or a file system that ignores the mode bits
            probe.unlink()
            pytest.skip(f"chmod does not restrict writes here (euid {os.geteuid()})")
        with pytest.raises(RunFolderError) as e:
            prepare_run_folder(ro)
        assert "is not writable" in _one_line(e, ro)
        with pytest.raises(RunFolderError) as e:
            prepare_run_folder(ro / "sub")
        assert "is not writable" in _one_line(e, ro / "sub")
    finally:
        ro.chmod(0o700)


def test_a_read_only_file_system_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EROFS on the probe (simulated: a read-only mount needs privileges)."""
    real_open = os.open

    def read_only_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path).parent == tmp_path and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    with pytest.raises(RunFolderError) as e:
        prepare_run_folder(tmp_path)
    text = _one_line(e, tmp_path)
    assert "is not writable" in text and f"errno {errno.EROFS}" in text
    assert list(tmp_path.iterdir()) == []


def test_a_permission_error_on_creation_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    real_mkdir = Path.mkdir

    def denied(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    with pytest.raises(RunFolderError) as e:
        prepare_run_folder(out)
    text = _one_line(e, out)
    assert "is not writable" in text and "Permission denied" in text


def test_another_os_error_quotes_its_reason(tmp_path: Path) -> None:
    out = tmp_path / ("x" * 300)  # longer than NAME_MAX
    with pytest.raises(RunFolderError) as e:
        prepare_run_folder(out)
    text = _one_line(e, out)
    assert os.strerror(errno.ENAMETOOLONG) in text and f"errno {errno.ENAMETOOLONG}" in text


# --- default_run_folder ------------------------------------------------------------------------


def test_default_names_are_unique_within_one_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moment = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    monkeypatch.setattr(run_folder, "_utc_now", lambda: moment)
    base = tmp_path / "runs"
    first, second, third = (default_run_folder(base) for _ in range(3))
    assert [p.name for p in (first, second, third)] == [
        "20240506-070809",
        "20240506-070809-2",
        "20240506-070809-3",
    ]
    assert all(p.is_dir() and p.parent == base for p in (first, second, third))

    got: list[Path] = []
    threads = [
        threading.Thread(target=lambda: got.append(default_run_folder(base))) for _ in "x" * 8
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and not {first, second, third} & set(got)


def test_default_base_that_is_a_file_is_refused(tmp_path: Path) -> None:
    base = tmp_path / "runs"
    base.write_text("")
    with pytest.raises(RunFolderError) as e:
        default_run_folder(base)
    _one_line(e, base)


# --- RunLock -----------------------------------------------------------------------------------

# A second process: tries to lock the folder, prints the outcome, then (after a line on stdin)
# tries again.
_CHECKER = """
import sys
from training.run_folder import RunFolderError, RunLock
for _ in range(2):
    try:
        with RunLock(sys.argv[1]):
            print("acquired", flush=True)
    except RunFolderError as e:
        print("refused:", e, flush=True)
    sys.stdin.readline()
"""

# A process that locks the folder, starts an atomic checkpoint write that never finishes, and
# waits to be killed.
_HOLDER = """
import sys, time
from pathlib import Path
from training import checkpoint
from training.run_folder import RunLock

def stuck(path, data):
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
    print("writing", flush=True)
    time.sleep(600)

lock = RunLock(sys.argv[1]).acquire()
checkpoint._write_file = stuck
checkpoint.atomic_write_bytes(Path(sys.argv[1]) / "checkpoint_last.pt", b"new" * 100)
"""


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_second_run_cannot_lock_the_folder_until_the_first_releases(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    with lock:
        assert lock.exclusive
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid {os.getpid()}\n")
        # a second lock fails in this process too
        with pytest.raises(RunFolderError, match="in use by another run"):
            RunLock(tmp_path).acquire()
        checker = _python(_CHECKER, str(tmp_path))
        assert checker.stdout is not None and checker.stdin is not None
        line = checker.stdout.readline().strip()
    assert not lock.held
    assert line == (
        f"refused: run folder {str(tmp_path)!r} is in use by another run (pid {os.getpid()}); "
        "wait for it to finish or choose another --out"
    )
    checker.stdin.write("\n")
    checker.stdin.flush()
    assert checker.stdout.readline().strip() == "acquired"
    checker.stdin.write("\n")
    checker.stdin.close()
    assert checker.wait(timeout=30) == 0
    # released: this process can take it again
    with RunLock(tmp_path) as again:
        assert again.held


def test_a_killed_run_leaves_neither_a_lock_nor_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint_last.pt"
    atomic_write_bytes(target, b"old checkpoint")
    holder = _python(_HOLDER, str(tmp_path))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "writing"
        with pytest.raises(RunFolderError) as e:
            RunLock(tmp_path).acquire()
        assert f"(pid {holder.pid})" in _one_line(e, tmp_path)
        assert temporary_path(target, holder.pid).is_file()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    assert (tmp_path / LOCK_NAME).is_file()  # stale file, but no lock
    with RunLock(tmp_path):
        removed = remove_stale_temporaries(tmp_path)
    assert removed == [temporary_path(target, holder.pid)]
    assert target.read_bytes() == b"old checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME, "checkpoint_last.pt"]


def test_release_is_idempotent_and_double_acquire_is_refused(tmp_path: Path) -> None:
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(RunFolderError, match="already locked"):
        lock.acquire()
    lock.release()
    lock.release()
    assert not lock.held and not lock.exclusive


def test_a_lock_in_a_missing_folder_is_a_run_folder_error(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError) as e:
        RunLock(tmp_path / "missing").acquire()
    _one_line(e, tmp_path / "missing")


# --- remove_stale_temporaries ------------------------------------------------------------------


def test_only_stale_temporaries_are_removed(tmp_path: Path) -> None:
    stale = [
        ".checkpoint_last.pt.tmp-123",
        ".checkpoint_best.pt.tmp-4",
        ".metrics.csv.tmp-99999",
        ".run-folder-probe-0a1b2c3d.tmp-7",  # a probe of prepare_run_folder
        f".config.json.tmp-{os.getpid()}",
    ]
    kept = [
        "checkpoint_last.pt",
        "metrics.csv",
        LOCK_NAME,
        "checkpoint_last.pt.tmp-123",  # no leading dot
        ".checkpoint_last.pt.tmp-12x",  # not a pid
        ".checkpoint_last.pt.tmp-",
        ".tmp-123",
        ".a.tmp-1.bak",
        "notes.txt",
    ]
    for name in stale + kept:
        (tmp_path / name).write_text(name)
    (tmp_path / ".folder.tmp-5").mkdir()  # a folder is never removed
    (tmp_path / ".link.tmp-6").symlink_to(tmp_path / "notes.txt")  # nor a link
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / ".checkpoint_last.pt.tmp-1").write_text("")  # nor anything below

    removed = remove_stale_temporaries(tmp_path)
    assert removed == sorted(tmp_path / n for n in stale)
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {*kept, ".folder.tmp-5", ".link.tmp-6", "sub"}
    assert (sub / ".checkpoint_last.pt.tmp-1").exists()
    assert remove_stale_temporaries(tmp_path) == []


def test_remove_stale_temporaries_of_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError) as e:
        remove_stale_temporaries(tmp_path / "missing")
    _one_line(e, tmp_path / "missing")
