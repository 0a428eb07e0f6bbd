"""Procedural sprite videos with a two-level hierarchy of actions, made on the fly.

Each video shows one *actor* sprite and a few *distractor* sprites, rendered as Gaussian blobs
on a pixel grid (one vectorised ``einsum`` per batch; no files, no downloads). The actor
performs a *coarse* action for the whole clip; at a random *reveal* frame in the middle third
of the clip, a *fine* action of that coarse action takes over:

==========  ===========================================================
coarse      fine actions (from the reveal frame on)
==========  ===========================================================
translate   continue · turn left (velocity rotated +90°) · turn right (−90°)
orbit       continue · reverse the turning direction · turn twice as fast
oscillate   continue · switch to the perpendicular axis · stop
==========  ===========================================================

Before the reveal frame the three fine actions of a coarse action are indistinguishable, so the
fine label is ambiguous at the start of a clip and revealed later; both labels are returned.
Positions bounce off the borders; speeds, directions, turning and oscillation rates and phases
are random. Videos come in groups (``group_size``) that share everything but the actor's
motion: the same colours, sizes, background and distractors, and (with ``anchor_frame``) the
same actor position at the last context frame. Within a group the last frame of the past
cannot tell the futures apart; the motion seen before it can, so predicting the future needs
the past.

Every batch is a pure function of ``(seed, split, epoch, batch index)``: the data order of an
epoch is reproducible from ``(seed, epoch)`` alone, whatever the number of workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "COARSE_ACTIONS",
    "FINE_ACTIONS",
    "SpriteBatch",
    "SpriteVideoConfig",
    "SpriteVideos",
    "batch_seed",
    "render_batch",
]

COARSE_ACTIONS: tuple[str, ...] = ("translate", "orbit", "oscillate")
FINE_ACTIONS: tuple[tuple[str, ...], ...] = (
    ("continue", "turn_left", "turn_right"),
    ("continue", "reverse", "turn_faster"),
    ("continue", "switch_axis", "stop"),
)

# (rotation of the velocity, speed factor, rate factor) after the reveal frame, per (coarse, fine).
_FINE_EFFECT = torch.tensor(
    [
        [[0.0, 1.0, 1.0], [math.pi / 2, 1.0, 1.0], [-math.pi / 2, 1.0, 1.0]],
        [[0.0, 1.0, 1.0], [0.0, 1.0, -1.0], [0.0, 1.0, 2.0]],
        [[0.0, 1.0, 1.0], [math.pi / 2, 1.0, 1.0], [0.0, 0.0, 1.0]],
    ],
    dtype=torch.float64,
)

_SPLITS = {"train": 0, "val": 1, "test": 2}
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def batch_seed(seed: int, split: str, epoch: int, index: int) -> int:
    """A 63-bit generator seed that is a fixed function of ``(seed, split, epoch, index)``.

    The four values are chained through the SplitMix64 mixer, so neighbouring inputs give
    unrelated seeds. Raises ``ValueError`` for an unknown ``split`` (train, val, test) or a
    negative ``epoch``/``index``.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {tuple(_SPLITS)}, got {split!r}")
    if epoch < 0 or index < 0:
        raise ValueError(f"epoch and index must be non-negative, got {epoch} and {index}")
    h = _splitmix64(seed & _MASK64)
    for v in (_SPLITS[split], epoch, index):
        h = _splitmix64(h ^ v)
    return h >> 1


@dataclass(frozen=True)
class SpriteVideoConfig:
    """Shape and content of the sprite videos.

    Attributes:
        num_seq: blocks per video.
        seq_len: frames per block (a video has ``num_seq * seq_len`` frames).
        img_dim: side of the square frames in pixels.
        num_distractors: sprites that move at constant velocity besides the actor.
        group_size: consecutive videos of a batch form groups that share their appearance
            (colours, sizes, background), their distractors and the actor's anchor point;
            they differ only by the actor's motion (actions, speed, direction, rates).
        anchor_frame: when set, the actor of every video of a group is at the group's anchor
            point at this frame (set it to the last context frame: the videos of a group then
            look the same there, and only the motion seen before tells their futures apart).
    """

    num_seq: int
    seq_len: int
    img_dim: int
    num_distractors: int = 1
    group_size: int = 1
    anchor_frame: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_seq", "seq_len", "img_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.num_distractors < 0:
            raise ValueError(f"num_distractors must be >= 0, got {self.num_distractors}")
        if self.group_size <= 0:
            raise ValueError(f"group_size must be positive, got {self.group_size}")
        if self.anchor_frame is not None and not 0 <= self.anchor_frame < self.num_frames:
            raise ValueError(
                f"anchor_frame must be in [0, {self.num_frames}), got {self.anchor_frame}"
            )

    @property
    def num_frames(self) -> int:
        """Frames per video, ``num_seq * seq_len``."""
        return self.num_seq * self.seq_len


class SpriteBatch(NamedTuple):
    """A rendered batch.

    Attributes:
        video: ``(B, num_seq, 3, seq_len, H, W)`` float32 in ``[0, 1]``.
        coarse: ``(B,)`` int64 index into :data:`COARSE_ACTIONS`.
        fine: ``(B,)`` int64 index into ``FINE_ACTIONS[coarse]``.
        reveal: ``(B,)`` int64 frame from which the fine action acts.
    """

    video: Tensor
    coarse: Tensor
    fine: Tensor
    reveal: Tensor


def _uniform(g: torch.Generator, shape: tuple[int, ...], lo: float, hi: float) -> Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def _fold(x: Tensor, margin: float) -> Tensor:
    """Reflect coordinates into ``[margin, 1 - margin]`` (a sprite bouncing off the borders)."""
    length = 1.0 - 2.0 * margin
    y = torch.remainder(x - margin, 2.0 * length)
    return margin + length - (y - length).abs()


def render_batch(
    cfg: SpriteVideoConfig,
    batch_size: int,
    generator: torch.Generator,
    *,
    fine: Tensor | None = None,
) -> SpriteBatch:
    """Draw and render ``batch_size`` videos from ``generator`` (see the module docstring).

    The trajectory of the actor, with ``t`` the frame index, ``t_r`` the reveal frame and
    ``[t >= t_r]`` selecting the fine action's (rotation α, speed factor s, rate factor f)::

        v_t = speed · s_t · a_t · (cos(θ_0 + α_t + Σ_{u<t} ω f_u), sin(...))
        a_t = cos(φ_0 + Σ_{u<t} ν f_u)   (oscillate; 1 otherwise)
        p_t = fold(p_0 + Σ_{u<t} v_u)

    with ``ω`` non-zero only for orbit. A sprite at ``p`` with width ``σ`` and colour ``k``
    adds ``k · exp(-|x - p|² / 2σ²)`` to pixel centre ``x``; the frame is clamped to [0, 1].

    ``fine`` (``(batch_size,)`` integers in ``[0, 3)``), when given, replaces the drawn fine
    actions and nothing else: the same generator state then gives the same videos up to the
    reveal frames, which differ only by their fine action.

    Raises:
        ValueError: ``batch_size <= 0``, or ``fine`` of the wrong shape or range.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if fine is not None and (
        fine.shape != (batch_size,) or bool((fine < 0).any()) or bool((fine > 2).any())
    ):
        raise ValueError(f"fine must be ({batch_size},) integers in [0, 3), got {fine}")
    g = generator
    b, t_len, s = batch_size, cfg.num_frames, 1 + cfg.num_distractors
    coarse = torch.randint(0, len(COARSE_ACTIONS), (b,), generator=g)
    drawn = torch.randint(0, 3, (b,), generator=g)
    fine = drawn if fine is None else fine.to(torch.int64)
    lo, hi = t_len // 3, max(t_len // 3 + 1, (2 * t_len) // 3)
    reveal = torch.randint(lo, hi, (b,), generator=g)

    t = torch.arange(t_len, dtype=torch.float64)
    after = (t[None, :] >= reveal[:, None]).to(torch.float64)  # (B, T)
    effect = _FINE_EFFECT[coarse, fine]  # (B, 3)
    alpha = after * effect[:, 0:1]
    speed_f = 1.0 + after * (effect[:, 1:2] - 1.0)
    rate_f = 1.0 + after * (effect[:, 2:3] - 1.0)

    speed = _uniform(g, (b, 1), 0.03, 0.06)
    theta0 = _uniform(g, (b, 1), 0.0, 2 * math.pi)
    sign = torch.where(torch.rand((b, 1), generator=g) < 0.5, -1.0, 1.0).to(torch.float64)
    omega = sign * _uniform(g, (b, 1), 0.15, 0.3) * (coarse[:, None] == 1)
    nu = _uniform(g, (b, 1), 0.35, 0.6)
    phi0 = _uniform(g, (b, 1), 0.0, 2 * math.pi)

    def excl_cumsum(x: Tensor) -> Tensor:
        return torch.cumsum(x, dim=-1) - x

    turn = excl_cumsum(omega * rate_f)
    amp = torch.where(
        coarse[:, None] == 2, torch.cos(phi0 + excl_cumsum(nu * rate_f)), torch.ones_like(turn)
    )
    ang = theta0 + alpha + turn
    mag = speed * speed_f * amp
    vel = torch.stack([mag * torch.cos(ang), mag * torch.sin(ang)], dim=-1)  # (B, T, 2)
    # appearance, distractors and the actor's anchor point are shared within a group
    n_groups = -(-b // cfg.group_size)
    group = torch.arange(b) // cfg.group_size
    p0 = _uniform(g, (n_groups, 1, 2), 0.25, 0.75)[group]
    offsets = excl_cumsum(vel.transpose(1, 2)).transpose(1, 2)  # (B, T, 2)
    if cfg.anchor_frame is not None:
        offsets = offsets - offsets[:, cfg.anchor_frame : cfg.anchor_frame + 1]
    actor = p0 + offsets

    nd = cfg.num_distractors
    d0 = _uniform(g, (n_groups, nd, 1, 2), 0.1, 0.9)[group]
    d_ang = _uniform(g, (n_groups, nd, 1), 0.0, 2 * math.pi)[group]
    d_speed = _uniform(g, (n_groups, nd, 1), 0.005, 0.03)[group]
    d_vel = torch.stack([d_speed * torch.cos(d_ang), d_speed * torch.sin(d_ang)], dim=-1)
    distract = d0 + t[None, None, :, None] * d_vel  # (B, nd, T, 2)

    margin = 0.08
    pos = _fold(torch.cat([actor[:, None], distract], dim=1), margin).to(torch.float32)
    sigma = torch.cat(
        [_uniform(g, (n_groups, 1), 0.06, 0.09), _uniform(g, (n_groups, nd), 0.04, 0.1)], dim=1
    ).to(torch.float32)[group]
    color = _uniform(g, (n_groups, s, 3), 0.25, 1.0).to(torch.float32)[group]
    background = _uniform(g, (n_groups, 3), 0.0, 0.15).to(torch.float32)[group]

    grid = (torch.arange(cfg.img_dim, dtype=torch.float32) + 0.5) / cfg.img_dim
    inv = 1.0 / (2.0 * sigma * sigma)[:, :, None, None]  # (B, S, 1, 1)
    gx = torch.exp(-((grid - pos[..., 0:1]) ** 2) * inv)  # (B, S, T, W)
    gy = torch.exp(-((grid - pos[..., 1:2]) ** 2) * inv)  # (B, S, T, H)
    frames = torch.einsum("bsth,bstw,bsc->btchw", gy, gx, color)
    frames = (frames + background[:, None, :, None, None]).clamp_(0.0, 1.0)
    video = frames.reshape(b, cfg.num_seq, cfg.seq_len, 3, cfg.img_dim, cfg.img_dim)
    video = video.permute(0, 1, 3, 2, 4, 5).contiguous()
    return SpriteBatch(video=video, coarse=coarse, fine=fine, reveal=reveal)


class SpriteVideos(Dataset[SpriteBatch]):
    """The batches of one epoch of one split: item ``i`` is a whole rendered batch.

    ``dataset[i]`` is ``render_batch(cfg, batch_size, Generator(batch_seed(seed, split,
    epoch, i)))``, so every batch is reproducible on its own (use it with
    ``DataLoader(batch_size=None)``). The training split draws fresh videos every epoch; pass
    ``epoch=0`` for a fixed validation set.

    Raises:
        ValueError: non-positive ``batch_size`` or ``num_batches``, unknown ``split``, negative
            ``epoch``; ``IndexError`` for an index outside ``[0, num_batches)``.
    """

    def __init__(
        self,
        cfg: SpriteVideoConfig,
        *,
        seed: int,
        split: str,
        epoch: int,
        batch_size: int,
        num_batches: int,
    ) -> None:
        if batch_size <= 0 or num_batches <= 0:
            raise ValueError(
                f"batch_size and num_batches must be positive, got {batch_size}, {num_batches}"
            )
        batch_seed(seed, split, epoch, 0)  # validates split and epoch
        self.cfg = cfg
        self.seed = seed
        self.split = split
        self.epoch = epoch
        self.batch_size = batch_size
        self.num_batches = num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> SpriteBatch:
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch index {index} outside [0, {self.num_batches})")
        g = torch.Generator().manual_seed(batch_seed(self.seed, self.split, self.epoch, index))
        return render_batch(self.cfg, self.batch_size, g)
