"""Factorised space-time attention of ``ConvHyperbolicTransformer(space_time=True)``: attention
across the locations within a time step, then causal attention over time, batched."""

from __future__ import annotations

import pytest
import torch

import poincare
from models.video import VideoFuturePredictor
from poincare.nn import ConvHyperbolicTransformer

pytestmark = pytest.mark.usefixtures("one_thread")


def _module(space_time: bool, **kw: object) -> ConvHyperbolicTransformer:
    torch.manual_seed(0)
    return ConvHyperbolicTransformer(6, 8, 2, 2, space_time=space_time, **kw).eval()  # type: ignore[arg-type]


def _input() -> torch.Tensor:
    return torch.randn(2, 4, 6, 3, 3, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("space_time", [False, True])
def test_time_stays_causal(space_time: bool) -> None:
    m = _module(space_time)
    x = _input()
    y = x.clone()
    y[:, -1] += 1.0  # change only the last step
    with torch.no_grad():
        out_x, ctx_x = m(x)
        out_y, _ = m(y)
    assert out_x.shape == (2, 4, 8, 3, 3) and ctx_x.shape == (2, 8, 3, 3)
    torch.testing.assert_close(out_x[:, :-1], out_y[:, :-1], rtol=0, atol=0)
    assert not torch.allclose(out_x[:, -1], out_y[:, -1])


@pytest.mark.parametrize("space_time", [False, True])
def test_locations_mix_only_with_space_time(space_time: bool) -> None:
    m = _module(space_time)
    x = _input()
    y = x.clone()
    y[:, 0, :, 0, 0] += 1.0  # one location at the first step
    with torch.no_grad():
        out_x, _ = m(x)
        out_y, _ = m(y)
    others = torch.ones(3, 3, dtype=torch.bool)
    others[0, 0] = False
    moved = (out_x - out_y).abs()[:, 0][..., others].amax()
    if space_time:
        assert float(moved) > 1e-4  # the other locations see the change
    else:
        assert float(moved) == 0.0  # each location is its own sequence
    # other batch elements never see it
    z = x.clone()
    z[0, 0, :, 0, 0] += 1.0
    with torch.no_grad():
        out_z, _ = m(z)
    torch.testing.assert_close(out_z[1], out_x[1], rtol=0, atol=0)


def test_space_time_matches_a_loop_over_steps_and_locations() -> None:
    """The batched layers equal the definition applied one time step / one location at a
    time (float64, so the comparison is tight)."""
    m = _module(True).double()
    x = _input().double()
    b, t, _, h, w = x.shape
    with torch.no_grad():
        out, _ = m.forward_tangent(x)
        tr = m.transformer
        seq = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, 6)
        assert tr.pos_encoding is not None and m.spatial_pos is not None
        y = tr.pos_encoding(m.to_ball(seq)).reshape(b, h * w, t, 8)
        y = torch.stack([m.spatial_pos(y[:, :, s]) for s in range(t)], dim=2)
        for spatial, temporal in zip(m.spatial_layers, tr.layers, strict=True):
            y = torch.stack([spatial(y[:, :, s]) for s in range(t)], dim=2)
            y = torch.stack([temporal(y[:, loc], is_causal=True) for loc in range(h * w)], dim=1)
        ref = tr.norm.forward_tangent(y).reshape(b, h, w, t, 8).permute(0, 3, 4, 1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_space_time_gradients_and_float64_policy() -> None:
    m = _module(True).train()
    x = _input().requires_grad_(True)
    out, ctx = m(x)
    (out.sum() + ctx.sum()).backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert all(p.grad is not None for p in m.spatial_layers.parameters() if p.requires_grad)
    with poincare.upcast(torch.float64):
        u, _ = m.forward_tangent(_input())
    assert u.dtype == torch.float64


def test_space_time_bad_input() -> None:
    m = _module(True, max_locations=4)
    with pytest.raises(ValueError, match="9 locations, more than max_locations=4"):
        m(_input())
    with pytest.raises(ValueError, match="space_time requires use_transformer"):
        VideoFuturePredictor(
            num_seq=3, seq_len=2, pred_step=1, img_dim=16, use_transformer=False, space_time=True
        )


def test_video_model_with_space_time_trains_a_step() -> None:
    torch.manual_seed(0)
    model = VideoFuturePredictor(
        num_seq=3,
        seq_len=2,
        pred_step=1,
        img_dim=16,
        feature_dim=8,
        encoder_width=4,
        num_heads=2,
        transformer_layers=1,
        space_time=True,
    )
    assert model.space_time
    video = torch.rand(2, 3, 3, 2, 16, 16)
    out = model.loss(video)
    out.loss.backward()
    assert bool(torch.isfinite(out.loss))
    grads = [p.grad for p in model.aggregator.spatial_layers.parameters()]  # type: ignore[union-attr]
    assert grads and all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_a_checkpoint_older_than_the_setting_counts_as_without_it() -> None:
    from training.checkpoint import CheckpointError, check_compatible
    from training.config import TrainConfig

    current = TrainConfig().to_dict()
    old = {k: v for k, v in current.items() if k != "space_time"}
    assert check_compatible(old, current, "old.pt") == []
    with pytest.raises(CheckpointError, match="space_time: checkpoint false, this run true"):
        check_compatible(old, {**current, "space_time": True}, "old.pt")
