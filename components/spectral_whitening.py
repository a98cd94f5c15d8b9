"""Spectral whitening: a log-magnitude spectrogram split into its fine structure (which partials sound,
where) and its envelope (how loud each region of the spectrum is: the player's timbre, the room's and
the microphone's colour, the level), and the content encoder `whitened_conv_content` that reads only the
first.

A model that sees the input's envelope learns the envelopes of the players it trained on; off them (a
user's piano is always another player) it keeps the input's timbre. The envelope is an upper envelope
over frequency: a running maximum over `width` bins (wider than the spacing of the partials of the notes
the demo plays, so it rides on the peaks), interpolated linearly between blocks. Fine structure
is the log-spectrum minus it: peaks near 0, valleys below, down to a fixed depth. What remains of the input's level is one
number per frame, relative to the clip's loudest frame (so a clip 20 dB quieter reads the same), which
tells the content where notes begin and end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiostyle.components.frame_conv import LOG_MAGNITUDE_SCALE, DilatedStack
from audiostyle.platform.core.registry import register

# 47 bins is 1 kHz at 22,050 Hz and n_fft 1024: two partials or more of any note up to about E5 fall in it.
DEFAULT_WIDTH = 47
# Chosen on the demo's players (the same passage by TimGM6mb, csound and FluidR3 against other passages):
# 30 dB and 17 dB made one passage by two sets closest relative to two passages by one set.
ENVELOPE_RANGE = 3.45  # natural log: 30 dB
FINE_DEPTH = 2.0  # natural log: 17 dB
# Frames more than this far (natural log, ~104 dB) below the clip's loudest are read as silence.
LEVEL_RANGE = 12.0


def upper_envelope(logmag: Tensor, width: int = DEFAULT_WIDTH) -> Tensor:
    """Upper envelope over the last axis (bins) of `logmag` [..., F], same shape: the maximum of blocks
    of width/3 bins, a running maximum over three blocks (about `width` bins), interpolated linearly back
    to every bin. Linear in the number of bins (a sliding maximum of `width` costs width times more, and
    this runs on every clip of every step)."""
    if width < 3:
        raise ValueError(f"width must be at least 3 bins, got {width}")
    shape = logmag.shape
    flat = logmag.reshape(-1, 1, shape[-1])
    block = width // 3
    blocks = F.max_pool1d(flat, block, stride=block, ceil_mode=True)
    peaks = F.max_pool1d(F.pad(blocks, (1, 1), mode="replicate"), 3, stride=1)
    return F.interpolate(peaks, size=shape[-1], mode="linear", align_corners=False).reshape(shape)


def fine_structure(logmag: Tensor, width: int = DEFAULT_WIDTH, depth: float = FINE_DEPTH) -> Tensor:
    """`logmag` minus its upper envelope, in [-depth, 0]: which partials sound, without how loud or in
    what colour. Regions more than ENVELOPE_RANGE below the frame's loudest are measured from that level,
    not from their own envelope, so a player's hiss or a room's tail in an empty band does not read as a
    partial; valleys deeper than `depth` read alike (how deep is the sample set's noise floor)."""
    envelope = upper_envelope(logmag, width)
    envelope = torch.maximum(envelope, envelope.amax(dim=-1, keepdim=True) - ENVELOPE_RANGE)
    return (logmag - envelope).clamp_min(-depth)


def relative_level(logmag: Tensor, width: int = DEFAULT_WIDTH) -> Tensor:
    """Per-frame level [B, C, T] of `logmag` [B, C, T, F] relative to the clip's loudest frame, in [-LEVEL_RANGE, 0]."""
    level = upper_envelope(logmag, width).amax(dim=-1)
    return (level - level.amax(dim=-1, keepdim=True)).clamp_min(-LEVEL_RANGE)


@register("encoder", "whitened_conv_content")
class WhitenedConvContent(nn.Module):
    """Frame-level content [B, T, dim] from the whitened spectrum and the relative level of each frame:
    a dilated gated conv stack, as `frame_conv_content`, that never sees the input's spectral envelope."""

    def __init__(self, in_bins: int, in_channels: int = 1, num_classes: int = 2, dim: int = 192,
                 num_layers: int = 4, kernel_size: int = 3, width: int = DEFAULT_WIDTH, dilation_base: int = 2):
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        self.width = width
        self.inp = nn.Conv1d(in_channels * (in_bins + 1), dim, 1)
        self.stack = DilatedStack(dim, num_layers, kernel_size=kernel_size, dilation_base=dilation_base)

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, C, T, in_bins] (log-magnitudes) -> content [B, T, dim]."""
        fine = fine_structure(feats, self.width)
        level = relative_level(feats, self.width).unsqueeze(-1)
        x = torch.cat([fine, level], dim=-1)  # [B, C, T, F + 1]
        b, c, t, f = x.shape
        x = x.permute(0, 1, 3, 2).reshape(b, c * f, t) / LOG_MAGNITUDE_SCALE
        return self.stack(self.inp(x)).transpose(1, 2)
