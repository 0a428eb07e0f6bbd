"""A small 3-D convolutional encoder that turns a clip block into a feature map."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BlockEncoder3D"]


def _groups(channels: int) -> int:
    """The largest of 8, 4, 2, 1 that divides ``channels`` (GroupNorm's group count)."""
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class BlockEncoder3D(nn.Module):
    """Encode a block of ``seq_len`` RGB frames into a ``(out_dim, H/8, W/8)`` feature map.

    Three 3-D convolution stages, each halving the spatial size (GroupNorm + ReLU after the
    first two), then a mean over the remaining time axis::

        (N, 3, L, H, W) -> conv(1x3x3, /2) -> conv(3x3x3, /2) -> conv(3x3x3, /2)
                        -> mean over time -> (N, out_dim, H/8, W/8)

    The last stage has no non-linearity, so the features can take any sign (they are the
    tangent vectors that the video model maps into the ball).

    Args:
        width: channels of the first stage (the second has ``2 * width``).
        out_dim: channels of the output feature map.
        in_channels: channels of the input frames (3 for RGB).

    Raises:
        ValueError: non-positive sizes, or an input that is not ``(N, in_channels, L, H, W)``
            with ``H`` and ``W`` multiples of 8.
    """

    def __init__(self, width: int, out_dim: int, in_channels: int = 3) -> None:
        super().__init__()
        for name, value in (("width", width), ("out_dim", out_dim), ("in_channels", in_channels)):
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.in_channels = in_channels
        self.out_dim = out_dim
        w2 = 2 * width
        self.net = nn.Sequential(
            nn.Conv3d(in_channels, width, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.GroupNorm(_groups(width), width),
            nn.ReLU(inplace=True),
            nn.Conv3d(width, w2, (3, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1)),
            nn.GroupNorm(_groups(w2), w2),
            nn.ReLU(inplace=True),
            nn.Conv3d(w2, out_dim, (3, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1)),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x (N, C, L, H, W)`` -> features ``(N, out_dim, H/8, W/8)``."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (N, {self.in_channels}, L, H, W), got {tuple(x.shape)}"
            )
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"H and W must be multiples of 8, got {tuple(x.shape[-2:])}")
        out: Tensor = self.net(x).mean(dim=2)
        return out
