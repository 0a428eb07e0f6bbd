"""Tests of the procedural sprite-video data set."""

from __future__ import annotations

import pytest
import torch

from training.data import (
    COARSE_ACTIONS,
    FINE_ACTIONS,
    SpriteVideoConfig,
    SpriteVideos,
    batch_seed,
    render_batch,
)

CFG = SpriteVideoConfig(num_seq=4, seq_len=4, img_dim=16)


def _ds(**kw: int) -> SpriteVideos:
    args = {"seed": 0, "epoch": 0, "batch_size": 8, "num_batches": 3, **kw}
    return SpriteVideos(CFG, split="train", **args)


def test_shapes_ranges_and_labels() -> None:
    b = _ds()[0]
    assert b.video.shape == (8, 4, 3, 4, 16, 16)
    assert b.video.dtype == torch.float32
    assert float(b.video.min()) >= 0.0 and float(b.video.max()) <= 1.0
    assert b.coarse.shape == b.fine.shape == b.reveal.shape == (8,)
    assert bool(((b.coarse >= 0) & (b.coarse < len(COARSE_ACTIONS))).all())
    assert bool(((b.fine >= 0) & (b.fine < 3)).all())
    n = CFG.num_frames
    assert bool(((b.reveal >= n // 3) & (b.reveal < (2 * n) // 3)).all())
    assert len(FINE_ACTIONS) == len(COARSE_ACTIONS)


def test_deterministic_by_seed_epoch_and_index() -> None:
    a, b = _ds(), _ds()
    for i in range(3):
        assert torch.equal(a[i].video, b[i].video)
        assert torch.equal(a[i].fine, b[i].fine)
    assert not torch.equal(a[0].video, a[1].video)
    assert not torch.equal(_ds(epoch=1)[0].video, a[0].video)
    assert not torch.equal(_ds(seed=1)[0].video, a[0].video)
    val = SpriteVideos(CFG, seed=0, split="val", epoch=0, batch_size=8, num_batches=1)
    assert not torch.equal(val[0].video, a[0].video)


def test_batch_seed_mixes_and_validates() -> None:
    seeds = {
        batch_seed(s, sp, e, i)
        for s in range(3)
        for sp in ("train", "val")
        for e in range(3)
        for i in range(3)
    }
    assert len(seeds) == 54
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="split"):
        batch_seed(0, "dev", 0, 0)
    with pytest.raises(ValueError, match="non-negative"):
        batch_seed(0, "train", -1, 0)


def test_fine_action_is_hidden_until_the_reveal_frame() -> None:
    """Same draws, different fine actions: equal frames before the reveal, different after."""
    n = 16
    cfg = SpriteVideoConfig(num_seq=6, seq_len=4, img_dim=32, num_distractors=0)
    videos = []
    for fine in range(3):
        g = torch.Generator().manual_seed(123)
        videos.append(render_batch(cfg, n, g, fine=torch.full((n,), fine)))
    reveal = videos[0].reveal
    assert torch.equal(videos[1].reveal, reveal) and torch.equal(videos[1].coarse, videos[0].coarse)
    frames = [
        v.video.permute(0, 1, 3, 2, 4, 5).reshape(n, cfg.num_frames, 3, 32, 32) for v in videos
    ]
    for i in range(n):
        r = int(reveal[i])
        # position changes one frame after the velocity does
        for f in (1, 2):
            assert torch.equal(frames[0][i, : r + 1], frames[f][i, : r + 1])
            assert not torch.equal(frames[0][i, r + 1 :], frames[f][i, r + 1 :]), (i, f)


def test_every_video_moves() -> None:
    b = _ds(batch_size=32)[0]
    v = b.video.permute(0, 1, 3, 2, 4, 5).reshape(32, CFG.num_frames, 3, 16, 16)
    assert bool(((v[:, 1:] - v[:, :-1]).abs().amax(dim=(2, 3, 4)) > 0).all())


def test_errors() -> None:
    with pytest.raises(ValueError, match="img_dim"):
        SpriteVideoConfig(num_seq=2, seq_len=2, img_dim=0)
    with pytest.raises(ValueError, match="batch_size"):
        _ds(batch_size=0)
    with pytest.raises(IndexError):
        _ds()[3]
    with pytest.raises(ValueError, match="fine"):
        render_batch(CFG, 2, torch.Generator(), fine=torch.tensor([0, 3]))


def test_groups_share_the_last_context_frame_and_differ_by_motion() -> None:
    cfg = SpriteVideoConfig(num_seq=5, seq_len=4, img_dim=32, group_size=4, anchor_frame=11)
    b = render_batch(cfg, 8, torch.Generator().manual_seed(5))
    frames = b.video.permute(0, 1, 3, 2, 4, 5).reshape(8, cfg.num_frames, 3, 32, 32)
    for grp in (range(0, 4), range(4, 8)):
        first = grp[0]
        for i in grp[1:]:
            torch.testing.assert_close(frames[i, 11], frames[first, 11], rtol=0, atol=1e-6)
            assert (frames[i, 12:] - frames[first, 12:]).abs().max() > 0.05
            assert (frames[i, :11] - frames[first, :11]).abs().max() > 0.05
    assert (frames[4, 11] - frames[0, 11]).abs().max() > 0.05
    with pytest.raises(ValueError, match="anchor_frame"):
        SpriteVideoConfig(num_seq=2, seq_len=2, img_dim=8, anchor_frame=4)
    with pytest.raises(ValueError, match="group_size"):
        SpriteVideoConfig(num_seq=2, seq_len=2, img_dim=8, group_size=0)
