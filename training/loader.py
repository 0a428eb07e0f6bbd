"""The data loaders of a training run, and an iteration over them that never hangs.

:func:`train_loader` gives a rank's batches of an epoch (from a position inside it),
:func:`val_batches` the fixed validation set; both read in ``--num_workers`` processes.
:class:`LoaderBatches` iterates them and turns every way loading can fail into one
:class:`DataLoadingError` with a one-line message, raised at a step boundary:

- **an item that cannot be read** (a corrupt frame, an unreadable video file, a missing
  optional dependency, any exception of the data set): the data set is wrapped so that the
  exception is caught where the item is read, in a worker process or in the main process alike,
  and travels to the main process as a :class:`LoadFailure` in place of the batch. Its message
  is the original one (a :class:`~training.video_data.VideoDataError` names the file); the
  worker's traceback is not printed.
- **a worker that dies** (SIGKILL, the out-of-memory killer): PyTorch notices it through
  SIGCHLD, but its handler raises in the middle of whatever the main process is doing (an
  optimiser step, a checkpoint write). :class:`LoaderBatches` defers that check to the next
  fetch, where the state is consistent; a worker that dies during a fetch is reported at once.
- **a worker that delivers nothing** for :data:`LOADER_TIMEOUT_S` seconds (stuck in I/O): the
  DataLoader's ``timeout``.

Whatever ends the iteration (the end of the data, an error, an exception of the training step),
leaving the ``with`` block shuts the workers down, so no worker is left for the interpreter's
exit handler to wait on. Workers are not persistent: every epoch builds a new loader (its data
set draws that epoch's clips), and a persistent worker would outlive the iteration that needs it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any, Generic, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset, default_collate, default_convert

from poincare._optional import MissingDependencyError
from training.config import TrainConfig
from training.data import SpriteBatch, SpriteVideoConfig, SpriteVideos, batch_seed
from training.distributed import DistContext, local_slice, shard_batches
from training.video_data import VideoDataError

__all__ = [
    "LOADER_TIMEOUT_S",
    "ORDER_SALT",
    "DataLoadingError",
    "LoadFailure",
    "LoaderBatches",
    "RealData",
    "build_real_data",
    "data_config",
    "describe_error",
    "make_loader",
    "sprite_batches",
    "steps_per_epoch",
    "train_loader",
    "val_batches",
]

#: Seconds a fetch waits for a batch from the worker processes before the run stops with
#: :class:`DataLoadingError` (a worker stuck in I/O). Generous: one batch of long video files
#: decoded without ``--cache_dir`` can take minutes.
LOADER_TIMEOUT_S = 600.0

#: Flipped into the seed of an epoch's order of real clips (and of the dropout of ranks > 0), so
#: that it is unrelated to the items' own draws.
ORDER_SALT = 0x2545F4914F6CDD1D

T = TypeVar("T")


class DataLoadingError(RuntimeError):
    """Loading a batch failed: an item could not be read, or a worker process died or stalled.

    Attributes:
        status: the exit status the command line ends with: 2 for data that cannot be read
            or a missing optional dependency (as for a missing data folder), 1 for a loader
            that failed (a worker killed or stuck).
    """

    def __init__(self, message: str, *, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def describe_error(e: BaseException) -> str:
    """``TypeName: first line of the message`` (the type alone for an empty message)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


@dataclass(frozen=True)
class LoadFailure:
    """What a data set raised for an item, sent in place of the item (picklable, so that it
    crosses from a worker process).

    Attributes:
        message: one line: the message of a :class:`~training.video_data.VideoDataError` or a
            :class:`~poincare._optional.MissingDependencyError` as it is (it names the file or
            the extra), else the exception's type and first line, with the item's index.
        status: 2 for those two kinds, 1 for any other exception.
    """

    message: str
    status: int

    @classmethod
    def of(cls, e: Exception, index: object) -> LoadFailure:
        """The failure of reading item ``index`` with the exception ``e``."""
        if isinstance(e, (VideoDataError, MissingDependencyError)):
            return cls(" ".join(str(e).split()), 2)
        return cls(f"reading item {index!r} of the data set failed ({describe_error(e)})", 1)


class _Guarded(Dataset[Any]):
    """A data set whose items are :class:`LoadFailure` where the wrapped one raises."""

    def __init__(self, data: Dataset[Any]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> Any:
        try:
            return self.data[index]
        except Exception as e:
            return LoadFailure.of(e, index)


def _collate(items: list[Any]) -> Any:
    """``default_collate`` of a batch, or the first :class:`LoadFailure` among its items."""
    for item in items:
        if isinstance(item, LoadFailure):
            return item
    return default_collate(items)


def _convert(item: Any) -> Any:
    """``default_convert`` of an unbatched item; a :class:`LoadFailure` as it is."""
    if isinstance(item, LoadFailure):
        return item
    return default_convert(item)  # type: ignore[no-untyped-call]


def _worker_init(_: int) -> None:
    """DataLoader workers leave SIGINT and SIGTERM to the main process.

    Ctrl-C, Slurm and systemd signal the whole process group. A worker that died of the
    signal would make the main process's loader raise before it could save; ignoring the
    signal keeps the workers alive until the main process, which stops at the next step
    boundary and saves, shuts them down. (A worker whose parent died still exits, through
    the DataLoader's watchdog.)"""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(
    data: Dataset[Any],
    *,
    num_workers: int,
    sampler: Sequence[int] | None = None,
    batch_sampler: Sequence[list[int]] | None = None,
    batch_size: int | None = None,
    drop_last: bool = False,
    generator: torch.Generator | None = None,
    timeout: float = LOADER_TIMEOUT_S,
) -> DataLoader[Any]:
    """A DataLoader over ``data`` whose failed items arrive as :class:`LoadFailure` (iterate it
    with :class:`LoaderBatches`).

    Items are unbatched (the data set's items are batches) unless ``batch_sampler`` (which
    then replaces ``sampler``, ``batch_size`` and ``drop_last``) or ``batch_size`` is given,
    then collated by ``default_collate``. Workers ignore SIGINT and
    SIGTERM (the main process stops and saves) and a fetch waits at most ``timeout`` seconds.
    Raises ``ValueError`` (from the DataLoader) for a negative ``num_workers`` or ``timeout``.
    """
    batching: dict[str, Any] = (
        {"batch_sampler": batch_sampler}
        if batch_sampler is not None
        else {"batch_size": batch_size, "sampler": sampler, "drop_last": drop_last}
    )
    batched = batch_sampler is not None or batch_size is not None
    return DataLoader(
        _Guarded(data),
        **batching,
        collate_fn=_collate if batched else _convert,
        num_workers=num_workers,
        worker_init_fn=_worker_init,
        generator=generator,
        timeout=timeout if num_workers > 0 else 0.0,
    )


class LoaderBatches(Generic[T]):
    """Iterate ``batches`` (a DataLoader of :func:`make_loader`, or any iterable) inside a
    ``with`` block::

        with LoaderBatches(loader) as batches:
            for batch in batches:
                ...

    Every failure of a fetch raises :class:`DataLoadingError` (see the module docstring):
    a :class:`LoadFailure` item with its message and status, a dead or stalled worker with
    status 1. A worker's death is checked at the start of each fetch (on the main thread, where
    SIGCHLD is watched), never in the middle of the caller's work. Leaving the block shuts the
    workers down and restores the SIGCHLD handler. Iterating outside the block raises
    ``RuntimeError``.
    """

    def __init__(self, batches: Iterable[T]) -> None:
        self._source = batches
        self._it: Iterator[Any] | None = None
        self._watching = False
        self._previous: Any = None
        self._child_exited = False
        self._fetching = False

    def __enter__(self) -> LoaderBatches[T]:
        try:
            self._it = iter(self._source)  # starts the workers (and PyTorch's SIGCHLD handler)
            workers = isinstance(self._source, DataLoader) and self._source.num_workers > 0
            on_main = threading.current_thread() is threading.main_thread()
            if workers and on_main and hasattr(signal, "SIGCHLD"):
                self._previous = signal.getsignal(signal.SIGCHLD)
                signal.signal(signal.SIGCHLD, self._on_child_exit)
                self._watching = True
        except Exception as e:  # a worker that died before the watch began, no fork, ...
            self.__exit__(type(e), e, e.__traceback__)
            raise DataLoadingError(
                f"the data-loading workers failed to start ({describe_error(e)})", status=1
            ) from e
        return self

    def __iter__(self) -> LoaderBatches[T]:
        return self

    def _on_child_exit(self, signum: int, frame: FrameType | None) -> None:
        """SIGCHLD: check the workers now if a fetch is under way, else at the next one."""
        self._child_exited = True
        if self._fetching:
            self._check_workers(signum, frame)

    def _check_workers(self, signum: int, frame: FrameType | None) -> None:
        """Run the handler that was there before (PyTorch's: it raises ``RuntimeError`` for a
        worker that died, and calls the handler before it)."""
        self._child_exited = False
        if callable(self._previous):
            self._previous(signum, frame)

    def _dead_worker(self, wait: float = 1.0) -> str | None:
        """PyTorch's description of a worker that died (``DataLoader worker (pid N) is killed
        by signal: Killed.``), waiting up to ``wait`` seconds for its exit status to appear (a
        killed worker's pipes close before it can be reaped); ``None`` when none died."""
        if not self._watching:
            return None
        deadline = time.monotonic() + wait
        while True:
            try:
                self._check_workers(signal.SIGCHLD, None)
            except RuntimeError as e:
                return describe_error(e).removeprefix("RuntimeError: ")
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _fetch(self, it: Iterator[Any]) -> Any:
        """The next item of ``it``; a worker's death (seen before or during the fetch) raises
        ``RuntimeError`` here, and nowhere after the fetch."""
        try:
            self._fetching = True
            if self._child_exited:
                self._check_workers(signal.SIGCHLD, None)
            return next(it)
        finally:
            self._fetching = False

    def __next__(self) -> T:
        if self._it is None:
            raise RuntimeError("LoaderBatches is iterated outside its with block")
        try:
            item = self._fetch(self._it)
        except StopIteration:
            raise
        except Exception as e:  # not fetching any more: SIGCHLD only sets the flag
            why = self._dead_worker() or describe_error(e)
            raise DataLoadingError(f"a data-loading worker failed ({why})", status=1) from e
        if isinstance(item, LoadFailure):
            raise DataLoadingError(item.message, status=item.status)
        result: T = item
        return result

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        it, self._it = self._it, None
        try:
            shutdown = getattr(it, "_shutdown_workers", None)  # DataLoader's multi-process one
            if callable(shutdown):
                shutdown()
        finally:
            if self._watching:
                previous = self._previous if self._previous is not None else signal.SIG_DFL
                signal.signal(signal.SIGCHLD, previous)
                self._watching = False


# --- the data of a run -----------------------------------------------------------------------


def data_config(config: TrainConfig) -> SpriteVideoConfig:
    """The :class:`~training.data.SpriteVideoConfig` of ``config``'s videos."""
    return SpriteVideoConfig(
        num_seq=config.num_seq,
        seq_len=config.seq_len,
        img_dim=config.img_dim,
        num_distractors=config.num_distractors,
        group_size=config.group_size,
        anchor_frame=(config.num_seq - config.pred_step) * config.seq_len - 1,
    )


@dataclass
class RealData:
    """The real-video data sets of a run (``dataset`` frames or video)."""

    train: Any
    val: Any

    @property
    def skipped(self) -> list[str]:
        """Videos too short for one clip, in either split."""
        out: list[str] = []
        for d in (self.train, self.val):
            out.extend(str(s) for s in getattr(d, "skipped", []))
        return out


def build_real_data(config: TrainConfig) -> RealData | None:
    """The training and validation data sets of ``--dataset frames`` or ``video`` (see
    :mod:`training.video_data`), ``None`` for the embedded sprites. Raises
    :class:`training.video_data.VideoDataError` for a missing folder or list."""
    if config.dataset == "sprites":
        return None
    from training.video_data import build_video_datasets

    assert config.data_root is not None  # config.validate() checked it
    train, val = build_video_datasets(
        config.dataset,
        config.data_root,
        config.split_csv,
        config.val_csv,
        num_seq=config.num_seq,
        seq_len=config.seq_len,
        ds=config.ds,
        img_dim=config.img_dim,
        seed=config.seed,
        val_share=config.val_share,
        holdout=config.holdout,
        clips_per_video=config.clips_per_video,
        cache_dir=config.cache_dir,
    )
    return RealData(train=train, val=val)


def steps_per_epoch(config: TrainConfig, real: RealData | None) -> int:
    """Optimisation steps per epoch: ``train_batches`` for the sprites; the full global
    batches of the training clips for real video.

    Raises ``ValueError`` when the training set holds fewer clips than one batch."""
    if real is None:
        return config.train_batches
    n = len(real.train)
    if n < config.batch_size:
        raise ValueError(
            f"the training set has {n} clips, fewer than one batch (--batch_size "
            f"{config.batch_size}); lower --batch_size or raise --clips_per_video"
        )
    return n // config.batch_size


class _RankSlice(Dataset[SpriteBatch]):
    """This rank's rows of every batch of a data set of whole (global) batches."""

    def __init__(self, data: Dataset[SpriteBatch], part: slice, length: int) -> None:
        self.data = data
        self.part = part
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> SpriteBatch:
        b = self.data[index]
        return SpriteBatch(*(t[self.part] for t in b))


def _epoch_order(config: TrainConfig, epoch: int, n: int) -> list[int]:
    """The order of a real data set's ``n`` clips in ``epoch``: a permutation that is a pure
    function of ``(seed, epoch)``."""
    # The items' own draws use batch_seed(seed, "train", epoch, i); the order's seed is that of
    # item 0 with its bits flipped, so that the two are unrelated.
    g = torch.Generator().manual_seed(batch_seed(config.seed, "train", epoch, 0) ^ ORDER_SALT)
    order: list[int] = torch.randperm(n, generator=g).tolist()
    return order


def train_loader(
    config: TrainConfig,
    ctx: DistContext,
    epoch: int,
    start: int,
    steps: int,
    real: RealData | None,
) -> DataLoader[Any]:
    """This rank's batches ``start, ..., steps - 1`` of ``epoch``."""
    if real is None:
        data: Dataset[SpriteBatch] = SpriteVideos(
            data_config(config),
            seed=config.seed,
            split="train",
            epoch=epoch,
            batch_size=config.batch_size,
            num_batches=steps,
        )
        if ctx.active:
            data = _RankSlice(data, local_slice(config.batch_size, ctx), steps)
        return make_loader(
            data,
            num_workers=config.num_workers,
            sampler=list(range(start, steps)),
            generator=torch.Generator(),
        )
    real.train.set_epoch(epoch)
    batches = shard_batches(_epoch_order(config, epoch, len(real.train)), config.batch_size, ctx)
    return make_loader(
        real.train,
        num_workers=config.num_workers,
        batch_sampler=batches[start:steps],
        generator=torch.Generator(),
    )


def sprite_batches(
    config: TrainConfig, split: str, epoch: int, num_batches: int
) -> Iterator[SpriteBatch]:
    """The ``num_batches`` sprite batches of ``(config.seed, split, epoch)``, in order."""
    data = SpriteVideos(
        data_config(config),
        seed=config.seed,
        split=split,
        epoch=epoch,
        batch_size=config.batch_size,
        num_batches=num_batches,
    )
    return (data[i] for i in range(len(data)))


def val_batches(config: TrainConfig, real: RealData | None) -> Iterable[SpriteBatch]:
    """The fixed validation set: ``val_batches`` sprite batches of the ``val`` split, or every
    validation clip of real video in batches of ``batch_size`` (iterate it with
    :class:`LoaderBatches`)."""
    if real is None:
        return sprite_batches(config, "val", 0, config.val_batches)
    n = len(real.val)
    return make_loader(
        real.val,
        num_workers=config.num_workers,
        batch_size=min(config.batch_size, n),
        drop_last=True,
    )
