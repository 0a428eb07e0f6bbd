"""Convolutional GRU: the Euclidean recurrent aggregator of the video model.

A ConvGRU cell is a GRU whose matrix products are 2-D convolutions, so that the hidden state
keeps the spatial layout of the feature map::

    z_t = σ(W_z * [x_t, h_{t-1}])                 (update gate)
    r_t = σ(W_r * [x_t, h_{t-1}])                 (reset gate)
    n_t = tanh(W_n * [x_t, r_t ⊙ h_{t-1}])        (candidate state)
    h_t = (1 - z_t) ⊙ h_{t-1} + z_t ⊙ n_t

with ``*`` a same-padding convolution and ``⊙`` the elementwise product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvGRU", "ConvGRUCell"]


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


class ConvGRUCell(nn.Module):
    """One ConvGRU step (see the module docstring for the update equations).

    Args:
        input_dim: channels ``C_in`` of the input ``x_t``.
        hidden_dim: channels ``C_h`` of the hidden state.
        kernel_size: odd side of the square convolution kernels (same padding).

    Shapes: ``x (B, C_in, H, W)``, ``h (B, C_h, H, W)`` or ``None`` (zeros) -> ``(B, C_h, H, W)``.

    Raises:
        TypeError / ValueError: non-integer, non-positive sizes or an even ``kernel_size``.
    """

    def __init__(self, input_dim: int, hidden_dim: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.input_dim = _check_positive_int("input_dim", input_dim)
        self.hidden_dim = _check_positive_int("hidden_dim", hidden_dim)
        _check_positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.kernel_size = kernel_size
        pad = kernel_size // 2
        self.gates = nn.Conv2d(input_dim + hidden_dim, 2 * hidden_dim, kernel_size, padding=pad)
        self.candidate = nn.Conv2d(input_dim + hidden_dim, hidden_dim, kernel_size, padding=pad)
        nn.init.orthogonal_(self.gates.weight)
        nn.init.orthogonal_(self.candidate.weight)
        for conv in (self.gates, self.candidate):
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        """Return ``h_t`` from ``x_t`` and ``h_{t-1}`` (zeros when ``h`` is ``None``)."""
        if x.dim() != 4 or x.shape[1] != self.input_dim:
            raise ValueError(f"x must have shape (B, {self.input_dim}, H, W), got {tuple(x.shape)}")
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_dim, x.shape[2], x.shape[3])
        elif h.shape != (x.shape[0], self.hidden_dim, x.shape[2], x.shape[3]):
            raise ValueError(
                f"h must have shape {(x.shape[0], self.hidden_dim, x.shape[2], x.shape[3])}, "
                f"got {tuple(h.shape)}"
            )
        zr = torch.sigmoid(self.gates(torch.cat([x, h], dim=1)))
        z, r = zr.chunk(2, dim=1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], dim=1)))
        return (1.0 - z) * h + z * n


class ConvGRU(nn.Module):
    """A stack of :class:`ConvGRUCell` run over time.

    Args:
        input_dim: channels of the input sequence.
        hidden_dim: channels of every layer's hidden state.
        kernel_size: odd convolution kernel side.
        num_layers: number of stacked cells; layer ``l > 0`` reads layer ``l-1``'s states.
        dropout: dropout probability applied between layers (not after the last one).

    ``forward(x (B, T, C_in, H, W), hidden=None)`` returns ``(out, context)`` with
    ``out (B, T, hidden_dim, H, W)`` the last layer's state at every step and
    ``context (B, hidden_dim, H, W) = out[:, -1]`` — the same interface as the hyperbolic
    transformer aggregator, but Euclidean. ``hidden`` is an optional list of ``num_layers``
    initial states ``(B, hidden_dim, H, W)``; :meth:`step` advances all layers by one input.

    Raises:
        TypeError / ValueError: bad sizes, ``dropout`` outside ``[0, 1)``, or an input whose
        shape does not match.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        kernel_size: int = 1,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_positive_int("num_layers", num_layers)
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_dim = _check_positive_int("input_dim", input_dim)
        self.hidden_dim = _check_positive_int("hidden_dim", hidden_dim)
        self.num_layers = num_layers
        self.dropout = float(dropout)
        self.cells = nn.ModuleList(
            ConvGRUCell(input_dim if i == 0 else hidden_dim, hidden_dim, kernel_size)
            for i in range(num_layers)
        )

    def step(self, x: Tensor, hidden: list[Tensor] | None = None) -> list[Tensor]:
        """Advance every layer by one input ``x (B, C_in, H, W)``; return the new states."""
        new: list[Tensor] = []
        inp = x
        for i, cell in enumerate(self.cells):
            h = cell(inp, None if hidden is None else hidden[i])
            new.append(h)
            inp = h
            if i + 1 < self.num_layers and self.dropout > 0.0:
                inp = F.dropout(inp, self.dropout, self.training)
        return new

    def forward(self, x: Tensor, hidden: list[Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Run over ``x (B, T, C_in, H, W)``; return ``(out (B, T, C_h, H, W), out[:, -1])``."""
        if x.dim() != 5 or x.shape[2] != self.input_dim or x.shape[1] == 0:
            raise ValueError(
                f"x must have shape (B, T>0, {self.input_dim}, H, W), got {tuple(x.shape)}"
            )
        if hidden is not None and len(hidden) != self.num_layers:
            raise ValueError(f"hidden must hold {self.num_layers} states, got {len(hidden)}")
        outs: list[Tensor] = []
        for t in range(x.shape[1]):
            hidden = self.step(x[:, t], hidden)
            outs.append(hidden[-1])
        out = torch.stack(outs, dim=1)
        return out, out[:, -1]
