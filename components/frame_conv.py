"""1-D convolution stacks over STFT frames, frequency bins as channels: the building block of the
`frame_conv_*` encoders and the `spectral_*` decoders.

A frame-rate convolution sees every bin of a few neighbouring frames at once, which is what a pitch and
a spectral envelope are, and costs a fraction of a transformer over the same frames: one block of 192
channels over a 4 s crop is about 0.1 GFLOP, so a whole model trains at a few steps per second on two
CPU cores. Dilations 1, 2, 4, ... 32 give six blocks a receptive field of about 1.5 s, long enough to
know that a note began a second ago (a piano's decay, a violin's bow stroke). With kernel 3, dilations
1, 3, 9, 27 (`dilation_base=3`) tile the frames as densely (every offset is one sum of taps, balanced
ternary) and reach 81 frames with four blocks instead of 31: the same cost for 2.6 times the reach.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Natural log-magnitudes of audio at -20 dBFS RMS span about -7 (the floor) to +5; dividing by 3 puts
# them near unit scale for the first convolution without a data-dependent statistic.
LOG_MAGNITUDE_SCALE = 3.0


class GatedResidualBlock(nn.Module):
    """x + W(tanh(a) * sigmoid(g)), with (a, g) a dilated convolution of the normalised input and, when
    conditioned, `a` modulated by FiLM from a clip-level vector (the style): a * (1 + gamma) + beta."""

    def __init__(self, channels: int, dilation: int, *, kernel_size: int = 3, cond_dim: int = 0):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                              dilation=dilation)
        self.film = nn.Linear(cond_dim, 2 * channels) if cond_dim else None
        self.out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """x [B, C, T], cond [B, cond_dim] (required when the block was built with cond_dim)."""
        a, gate = self.conv(self.norm(x)).chunk(2, dim=1)
        if self.film is not None:
            if cond is None:
                raise ValueError("this block is conditioned: pass a style vector")
            gamma, beta = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
            a = a * (1 + gamma) + beta
        return x + self.out(torch.tanh(a) * torch.sigmoid(gate))


class DilatedStack(nn.Module):
    """`num_layers` gated residual blocks with dilations cycling 1, b, b**2, ... b**(cycle-1), b the
    `dilation_base` (at most the kernel size: 3 with kernel 3 reaches 3**num_layers frames)."""

    def __init__(self, channels: int, num_layers: int, *, kernel_size: int = 3, cond_dim: int = 0,
                 dilation_cycle: int = 6, dilation_base: int = 2):
        super().__init__()
        if num_layers < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"need num_layers >= 1 and an odd kernel_size, got {num_layers} and {kernel_size}")
        if kernel_size > 1 and not 2 <= dilation_base <= kernel_size:
            # beyond the kernel size the dilated taps leave offsets no path reaches
            raise ValueError(f"dilation_base must be within [2, kernel_size={kernel_size}], got {dilation_base}")
        self.blocks = nn.ModuleList(
            GatedResidualBlock(channels, dilation_base ** (i % dilation_cycle), kernel_size=kernel_size,
                               cond_dim=cond_dim)
            for i in range(num_layers))

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            x = block(x, cond)
        return x


def frames_as_channels(feats: Tensor) -> Tensor:
    """Front-end features [B, C, T, F] -> [B, C*F, T], scaled for a first convolution."""
    b, c, t, f = feats.shape
    return feats.permute(0, 1, 3, 2).reshape(b, c * f, t) / LOG_MAGNITUDE_SCALE
