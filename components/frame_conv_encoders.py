"""The encoders `frame_conv_content` and `frame_conv_style`: dilated 1-D convolutions over front-end
frames (bins as channels) for the fast CPU recipe (experiments/paired_spectral.yaml).

- `frame_conv_content` keeps one vector per frame: what is being played now and what was played over the
  last second or so (the receptive field), which is what a decoder needs to shape a target instrument's
  attack and decay around the notes.
- `frame_conv_style` pools a clip to one vector (mean and spread over time of the convolved frames):
  the model system averages these per instrument into the prototypes that transfer conditions on.
Both take features of any channel count (`in_channels`, from the front end: 1 for `log_stft`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from audiostyle.components.frame_conv import DilatedStack, frames_as_channels
from audiostyle.platform.core.registry import register


@register("encoder", "frame_conv_content")
class FrameConvContent(nn.Module):
    """Dilated gated conv stack over frames -> frame-level content [B, T, dim]."""

    def __init__(self, in_bins: int, in_channels: int = 1, num_classes: int = 2, dim: int = 192,
                 num_layers: int = 4, kernel_size: int = 3):
        super().__init__()
        self.dim = dim  # the content vector size the decoder and discriminator receive
        self.num_classes = num_classes
        self.inp = nn.Conv1d(in_channels * in_bins, dim, 1)
        self.stack = DilatedStack(dim, num_layers, kernel_size=kernel_size)

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, C, T, in_bins] -> content [B, T, dim]."""
        return self.stack(self.inp(frames_as_channels(feats))).transpose(1, 2)


@register("encoder", "frame_conv_style")
class FrameConvStyle(nn.Module):
    """Dilated conv stack over frames, mean and std over time -> style embedding [B, dim]."""

    def __init__(self, in_bins: int, in_channels: int = 1, num_classes: int = 2, dim: int = 64, width: int = 128,
                 num_layers: int = 3, kernel_size: int = 3):
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        self.inp = nn.Conv1d(in_channels * in_bins, width, 1)
        self.stack = DilatedStack(width, num_layers, kernel_size=kernel_size)
        self.head = nn.Linear(2 * width, dim)

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, C, T, in_bins] -> style [B, dim]."""
        h = self.stack(self.inp(frames_as_channels(feats)))
        return self.head(torch.cat([h.mean(dim=-1), h.std(dim=-1)], dim=-1))
