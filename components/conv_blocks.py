"""Residual convolution blocks over (time, frequency) that turn feature frames into frame embeddings.

Both encoders start here. The blocks halve the FREQUENCY axis and (by default) keep every time frame,
so what comes out is one vector per STFT frame. The research pooled each 3.3 s window to one vector
(4 vectors per 10 s), which is why its reconstructions were flat over time.

Normalisation is GroupNorm (style: keeps per-clip statistics, which carry timbre) or InstanceNorm
(content: removes them). No spectral norm: mixed with BatchNorm it fought the normaliser and its
re-initialisation never reached the weights in the research code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        # 8 channels per group when possible; GroupNorm is batch-size independent (batches are 4-16 clips)
        return nn.GroupNorm(max(1, channels // 8), channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"unknown norm {kind!r}: use 'group' or 'instance'")


def add_magnitude_channel(feats: Tensor) -> Tensor:
    """[B, 2, T, F] real/imag -> [B, 3, T, F] with log(1 + |z|) appended.

    Real and imaginary parts rotate with phase from frame to frame; the magnitude is the stable cue for
    pitch and loudness, and a conv stack cannot compute a square root from two channels cheaply.
    """
    magnitude = torch.sqrt(feats[:, 0] ** 2 + feats[:, 1] ** 2 + 1e-8)
    return torch.cat((feats, torch.log1p(magnitude).unsqueeze(1)), dim=1)


class ResBlock(nn.Module):
    """conv3x3(stride) -> norm -> GELU -> conv3x3 -> norm, plus a (strided 1x1) shortcut, then GELU."""

    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int] = (1, 2), norm: str = "group"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, out_ch)
        self.act = nn.GELU()
        if in_ch != out_ch or stride != (1, 1):
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(norm, out_ch)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return self.act(h + self.shortcut(x))


def _downsampled(size: int, stride: int) -> int:
    # output length of a kernel-3, padding-1 conv with this stride
    return (size - 1) // stride + 1


class FrameEmbedding(nn.Module):
    """Feature tensor [B, 2, T, F] -> frame embeddings [B, T / time_stride, dim].

    Each block halves frequency. `time_stride` (a power of two, default 1) lets the style encoder, which
    only needs a clip-level summary, also halve time in the first blocks and save compute.
    """

    def __init__(self, in_bins: int, dim: int, channels: Sequence[int] = (8, 16, 32, 64),
                 time_stride: int = 1, norm: str = "group"):
        super().__init__()
        halvings = time_stride.bit_length() - 1
        if time_stride < 1 or 2**halvings != time_stride or halvings > len(channels):
            raise ValueError(f"time_stride must be a power of two <= 2**{len(channels)}, got {time_stride}")
        time_strides = [2] * halvings + [1] * (len(channels) - halvings)
        blocks, in_ch, bins = [], 3, in_bins
        for out_ch, ts in zip(channels, time_strides, strict=True):
            blocks.append(ResBlock(in_ch, out_ch, stride=(ts, 2), norm=norm))
            in_ch, bins = out_ch, _downsampled(bins, 2)
        self.blocks = nn.Sequential(*blocks)
        self.time_stride = time_stride
        self.project = nn.Linear(in_ch * bins, dim)
        self.in_bins = in_bins

    def num_frames(self, frames: int) -> int:
        """Output length for an input of `frames` frames."""
        out = frames
        for block in self.blocks:
            out = _downsampled(out, block.conv1.stride[0])
        return out

    def forward(self, feats: Tensor) -> Tensor:
        if feats.dim() != 4 or feats.shape[1] != 2 or feats.shape[-1] != self.in_bins:
            raise ValueError(f"expected features [B, 2, T, {self.in_bins}], got {list(feats.shape)}")
        h = self.blocks(add_magnitude_channel(feats))  # [B, C, T', F']
        b, c, t, f = h.shape
        return self.project(h.permute(0, 2, 1, 3).reshape(b, t, c * f))
