"""The content encoder `content_transformer`: a frame-level sequence of what is played, not how.

Three things keep timbre out of it while keeping notes in:
- the input's per-clip spectral envelope (RMS of each bin over time) is divided out, so the long-term
  spectrum, a main timbre cue, never reaches the network;
- the CNN blocks use InstanceNorm, which removes per-clip channel statistics at every depth;
- the output is a narrow bottleneck (`dim`, default 64, against a transformer width of 256),
  instance-normalised over time, so a clip-wide offset or gain cannot carry the instrument either.
Every STFT frame gives one content vector (time stride 1): content [B, T, dim].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from audiostyle.components.attention import EncoderLayer
from audiostyle.components.conv_blocks import FrameEmbedding
from audiostyle.platform.core.registry import register


def remove_spectral_envelope(feats: Tensor, eps: float = 0.1) -> Tensor:
    """Divide each (bin) of [B, 2, T, F] by its RMS magnitude over the clip's frames.

    eps (in normalised units, where a typical bin has RMS ~1) stops near-silent bins from being
    blown up to unit level, which would turn their noise into content.
    """
    power = (feats[:, 0] ** 2 + feats[:, 1] ** 2).mean(dim=1, keepdim=True)  # [B, 1, F]
    return feats / torch.sqrt(power + eps**2).unsqueeze(1)


@register("encoder", "content_transformer")
class ContentTransformer(nn.Module):
    """InstanceNorm CNN + transformer, no CLS -> frame-level content [B, T, dim] (narrow bottleneck)."""

    def __init__(self, in_bins: int, dim: int = 64, width: int = 256, num_layers: int = 4, num_heads: int = 4,
                 channels: Sequence[int] = (8, 16, 32, 64), attention_window: int = 256, dropout: float = 0.1):
        super().__init__()
        self.dim = dim  # the content vector size the decoder and discriminator receive
        self.embed = FrameEmbedding(in_bins, width, channels, norm="instance")
        # A bounded window (256 frames = 3 s at hop 256 / 22,050 Hz) keeps a 10 s clip as cheap per frame
        # as a training crop, and makes every frame's context look like the ones seen in training.
        self.window = attention_window
        self.layers = nn.ModuleList(
            EncoderLayer(width, num_heads, dropout, window=attention_window) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(width)
        self.bottleneck = nn.Linear(width, dim)
        self.out_norm = nn.InstanceNorm1d(dim, affine=False)

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, 2, T, in_bins] (normalised) -> content [B, T, dim]."""
        x = self.embed(remove_spectral_envelope(feats))
        pos = torch.arange(x.shape[1], device=x.device)
        for layer in self.layers:
            x = layer(x, pos)
        z = self.bottleneck(self.norm(x))  # [B, T, dim]
        if z.shape[1] > 1:  # instance norm over time needs more than one frame
            z = self.out_norm(z.transpose(1, 2)).transpose(1, 2)
        return z
