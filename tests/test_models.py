"""Tests of the video future-prediction model: encoder, ConvGRU, loss and every variant."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

import poincare
from models.convgru import ConvGRU, ConvGRUCell
from models.encoder import BlockEncoder3D
from models.loss import contrastive_loss, group_top1, score_matrix
from models.video import VideoFuturePredictor
from poincare.nn.functional import SCORES

#: every score name the model and the CLI accept ("regular" is "distance")
SCORE_NAMES = ("regular", *SCORES)

TINY = {
    "num_seq": 4,
    "seq_len": 2,
    "pred_step": 2,
    "img_dim": 16,
    "feature_dim": 8,
    "encoder_width": 4,
    "num_heads": 2,
    "transformer_layers": 1,
    "transformer_dropout": 0.1,
}


def _video(batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, TINY["num_seq"], 3, TINY["seq_len"], 16, 16, generator=g)


def _model(**kw: object) -> VideoFuturePredictor:
    torch.manual_seed(0)
    args: dict[str, object] = {**TINY, **kw}
    return VideoFuturePredictor(**args)  # type: ignore[arg-type]


VARIANTS = [(False, False, "distance", fp64) for fp64 in (False, True)] + [
    (True, transformer, score, fp64)
    for transformer in (False, True)
    for score in SCORE_NAMES
    for fp64 in (False, True)
]


def _precision(fp64: bool) -> contextlib.AbstractContextManager[object]:
    """The one precision route: ``poincare.upcast(torch.float64)`` (what --fp64_hyper enters)."""
    return poincare.upcast(torch.float64) if fp64 else contextlib.nullcontext()


class TestModel:
    def test_model_forward_hyperbolic_transformer(self) -> None:
        model = _model(hyperbolic=True, use_transformer=True)
        video = _video()
        pred, target = model(video)
        h = TINY["img_dim"] // 8
        assert pred.shape == (2, TINY["pred_step"], h, h, TINY["feature_dim"])
        assert target.shape == pred.shape
        poincare.check_point(pred, c=1.0)
        poincare.check_point(target, c=1.0)
        out = model.loss(video)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        assert out.num_candidates == 2 * TINY["pred_step"] * h * h
        out.loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        # the transformer's parameters receive gradient
        agg = [p.grad for p in model.aggregator.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in agg)

    @pytest.mark.parametrize(("hyperbolic", "transformer", "score", "fp64"), VARIANTS)
    def test_forward_backward_variant(
        self, hyperbolic: bool, transformer: bool, score: str, fp64: bool
    ) -> None:
        model = _model(hyperbolic=hyperbolic, use_transformer=transformer, score=score)
        video = _video()
        with _precision(fp64):
            pred, target = model(video)
            out = model.loss(video)
        # under the float64 policy the points stay float64 all the way to the loss
        expected = torch.float64 if (fp64 and hyperbolic) else torch.float32
        assert pred.dtype == expected and target.dtype == expected
        if hyperbolic:
            poincare.check_point(pred, c=1.0)
        assert out.loss.dtype == torch.float32
        assert torch.isfinite(out.loss)
        # InfoNCE is at least 0 and, with M candidates, starts near log(M)
        assert 0.0 <= out.loss.item() < 10 * math.log(out.num_candidates) + 10
        out.loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
        assert model.encoder.net[0].weight.grad is not None
        assert model.encoder.net[0].weight.grad.abs().sum() > 0

    def test_fp64_changes_only_rounding(self) -> None:
        video = _video()
        model = _model(transformer_dropout=0.0).eval()
        la = model.loss(video).loss
        with poincare.upcast(torch.float64):
            lb = model.loss(video).loss
        assert torch.allclose(la, lb, rtol=1e-4, atol=1e-4)

    def test_no_float32_round_trip_under_the_float64_policy(self) -> None:
        """The transformer's context reaches the rollout as its float64 tangent vector (no
        float64 -> float32 -> float64 point on the way), and to_ball keeps float64 points."""
        model = _model(transformer_dropout=0.0).eval()
        z = torch.randn(2, 2, TINY["feature_dim"], 2, 2)
        seen: list[torch.dtype] = []
        handle = model.rollout_cell.register_forward_pre_hook(  # type: ignore[union-attr]
            lambda _m, args: seen.append(args[1].dtype)
        )
        with poincare.upcast(torch.float64):
            out, context = model.aggregator.forward_tangent(z)  # type: ignore[operator]
            assert out.dtype == context.dtype == torch.float64
            model(_video())
            assert model.to_ball(torch.randn(3, TINY["feature_dim"])).dtype == torch.float64
        handle.remove()
        assert seen == [torch.float32]  # the Euclidean cell is float32, narrowed once
        # and the tangent vector is logmap0 of the context point
        _, ctx_points = model.aggregator(z)
        torch.testing.assert_close(
            poincare.logmap0(ctx_points.permute(0, 2, 3, 1)),
            model.aggregator.forward_tangent(z)[1].permute(0, 2, 3, 1),  # type: ignore[operator]
            rtol=1e-4,
            atol=1e-5,
        )

    def test_learnable_curvature_is_shared_and_trained(self) -> None:
        ball = poincare.PoincareBall(0.8, learnable=True)
        model = _model(c=ball)
        assert model.ball is ball and model.aggregator.ball is ball  # type: ignore[union-attr]
        names = [n for n, _ in model.named_parameters() if n.endswith("log_c")]
        assert names == ["ball.log_c"]  # one parameter, however many modules share it
        out = model.loss(_video())
        out.loss.backward()
        assert ball.log_c.grad is not None and torch.isfinite(ball.log_c.grad)
        assert ball.log_c.grad.abs() > 0
        # a dtype cast of the model leaves the curvature float64 and unrounded
        before = ball.c.item()
        model.half()
        assert ball.log_c.dtype == torch.float64 and ball.c.item() == before

    def test_causal_prediction_ignores_future_blocks(self) -> None:
        for transformer in (False, True):
            model = _model(use_transformer=transformer, transformer_dropout=0.0).eval()
            video = _video()
            other = video.clone()
            other[:, -TINY["pred_step"] :] = torch.rand_like(other[:, -TINY["pred_step"] :])
            pred_a, target_a = model(video)
            pred_b, target_b = model(other)
            assert torch.equal(pred_a, pred_b)
            assert not torch.equal(target_a, target_b)

    @pytest.mark.parametrize(
        ("kw", "match"),
        [
            ({"pred_step": 4}, "pred_step"),
            ({"hyperbolic": False, "use_transformer": True}, "use_transformer"),
            ({"num_heads": 3}, "num_heads"),
            ({"img_dim": 12}, "img_dim"),
            ({"feature_dim": 0}, "feature_dim"),
            ({"c": 0.0}, "c must"),
            ({"score": "manhattan"}, "score"),
        ],
    )
    def test_invalid_configuration(self, kw: dict[str, object], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            _model(**kw)

    def test_wrong_video_shape(self) -> None:
        model = _model(use_transformer=False)
        with pytest.raises(ValueError, match="video must have shape"):
            model(torch.rand(2, 3, 3, 2, 16, 16))


class TestLoss:
    def _points(self, n: int, d: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return poincare.expmap0(0.5 * torch.randn(n, d, generator=g, dtype=torch.float64))

    @pytest.mark.parametrize("score", SCORE_NAMES)
    @pytest.mark.parametrize("c", [1.0, 0.3])
    def test_scores_match_pointwise_distance(self, score: str, c: float) -> None:
        x, y = self._points(5, 3, 0) * c**-0.5, self._points(7, 3, 1) * c**-0.5
        s = score_matrix(x, y, hyperbolic=True, score=score, c=c)
        d = poincare.dist(x[:, None, :], y[None, :, :], c=c)
        expected = {
            "regular": -d,
            "distance": -d,
            "squared": -(d**2),
            "cosh": -(torch.cosh(c**0.5 * d) - 1),  # the attention's score, the same name
        }[score]
        assert s.shape == (5, 7)
        torch.testing.assert_close(s, expected, rtol=1e-9, atol=1e-9)

    def test_euclidean_scores_are_dot_products(self) -> None:
        x, y = torch.randn(4, 3), torch.randn(6, 3)
        torch.testing.assert_close(score_matrix(x, y, hyperbolic=False), x @ y.t())

    def test_scores_follow_the_precision_policy(self) -> None:
        x = self._points(4, 3, 0)
        x32 = x.float()
        s32 = score_matrix(x32, x32, hyperbolic=True)
        with poincare.upcast(torch.float64):
            s_up = score_matrix(x32, x32, hyperbolic=True)  # computed in float64, float32 out
            s64 = score_matrix(x, x, hyperbolic=True)  # float64 points keep float64 scores
        assert s32.dtype == s_up.dtype == torch.float32 and s64.dtype == torch.float64
        torch.testing.assert_close(
            s_up, score_matrix(x32.double(), x32.double(), hyperbolic=True).float()
        )

    def test_loss_is_cross_entropy_over_all_candidates(self) -> None:
        p, t = self._points(6, 4, 2), self._points(6, 4, 3)
        out = contrastive_loss(p.reshape(2, 3, 4), t.reshape(2, 3, 4), hyperbolic=True)
        s = -poincare.pairwise_dist(p, t)
        torch.testing.assert_close(out.loss, F.cross_entropy(s, torch.arange(6)))
        assert out.num_candidates == 6

    def test_perfect_predictions_are_retrieved(self) -> None:
        t = self._points(10, 4, 4)
        out = contrastive_loss(t, t.clone(), hyperbolic=True, score="squared")
        assert out.top1.item() == 1.0 and out.top5.item() == 1.0
        shuffled = t.roll(1, dims=0)
        out = contrastive_loss(shuffled, t, hyperbolic=True)
        assert out.top1.item() == 0.0

    def test_batched_scores_equal_per_batch_scores(self) -> None:
        x = self._points(12, 3, 5).reshape(2, 2, 3, 3)
        y = self._points(8, 3, 6).reshape(2, 4, 3)
        s = score_matrix(x, y[None], hyperbolic=True, score="cosh")
        assert s.shape == (2, 2, 3, 4)
        torch.testing.assert_close(
            s[1, 0], score_matrix(x[1, 0], y[0], hyperbolic=True, score="cosh")
        )

    def test_group_top1(self) -> None:
        t = self._points(6 * 2 * 4, 3, 7).reshape(6, 2, 4, 3)  # B=6, 2 steps, 4 locations
        assert group_top1(t, t.clone(), 3, hyperbolic=True).item() == 1.0
        # a prediction equal to another member's target is wrong
        rolled = t.reshape(2, 3, 2, 4, 3).roll(1, dims=1).reshape(6, 2, 4, 3)
        assert group_top1(rolled, t, 3, hyperbolic=True).item() == 0.0
        # the same roll across groups, not within, leaves group retrieval intact
        across = t.roll(3, dims=0)
        assert group_top1(across, across.clone(), 3, hyperbolic=True).item() == 1.0
        # a partial last group is left out: B=6 with groups of 4 ranks one group
        assert group_top1(t, t.clone(), 4, hyperbolic=True).item() == 1.0
        with pytest.raises(ValueError, match="group_size"):
            group_top1(t, t, 7, hyperbolic=True)

    def test_bad_inputs(self) -> None:
        x = torch.zeros(3, 2)
        with pytest.raises(ValueError, match="same shape"):
            contrastive_loss(x, torch.zeros(3, 3), hyperbolic=True)
        with pytest.raises(ValueError, match="score"):
            score_matrix(x, x, hyperbolic=True, score="l1")
        with pytest.raises(ValueError, match="c must"):
            score_matrix(x, x, hyperbolic=True, c=-1.0)
        with pytest.raises(ValueError, match="last dimension"):
            score_matrix(x, torch.zeros(3, 3), hyperbolic=False)
        with pytest.raises(ValueError, match="at least 2-D"):
            score_matrix(torch.zeros(3), x, hyperbolic=False)


class TestConvGRU:
    def test_forward_equals_stepping(self) -> None:
        torch.manual_seed(0)
        gru = ConvGRU(3, 5, kernel_size=3, num_layers=2)
        x = torch.randn(2, 4, 3, 6, 6)
        out, ctx = gru(x)
        assert out.shape == (2, 4, 5, 6, 6)
        assert torch.equal(ctx, out[:, -1])
        hidden = None
        for t in range(4):
            hidden = gru.step(x[:, t], hidden)
            torch.testing.assert_close(hidden[-1], out[:, t])

    def test_causal(self) -> None:
        torch.manual_seed(0)
        gru = ConvGRU(3, 4)
        x = torch.randn(1, 5, 3, 2, 2)
        y = x.clone()
        y[:, 3:] += 1.0
        assert torch.equal(gru(x)[0][:, :3], gru(y)[0][:, :3])
        assert not torch.equal(gru(x)[0][:, 3:], gru(y)[0][:, 3:])

    def test_cell_update_rule(self) -> None:
        torch.manual_seed(0)
        cell = ConvGRUCell(2, 3)
        x, h = torch.randn(1, 2, 1, 1), torch.randn(1, 3, 1, 1)
        zr = torch.sigmoid(cell.gates(torch.cat([x, h], 1)))
        z, r = zr.chunk(2, 1)
        n = torch.tanh(cell.candidate(torch.cat([x, r * h], 1)))
        torch.testing.assert_close(cell(x, h), (1 - z) * h + z * n)

    def test_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="kernel_size"):
            ConvGRUCell(2, 3, kernel_size=2)
        with pytest.raises(ValueError, match="hidden_dim"):
            ConvGRU(2, 0)
        with pytest.raises(ValueError, match="x must have shape"):
            ConvGRU(2, 3)(torch.randn(1, 2, 3, 4, 4))


def test_encoder_shape_and_errors() -> None:
    enc = BlockEncoder3D(4, 6)
    z = enc(torch.rand(3, 3, 4, 32, 24))
    assert z.shape == (3, 6, 4, 3)
    with pytest.raises(ValueError, match="multiples of 8"):
        enc(torch.rand(1, 3, 4, 20, 20))
    with pytest.raises(ValueError, match="width"):
        BlockEncoder3D(0, 6)
