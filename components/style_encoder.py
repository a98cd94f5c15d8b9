"""The style encoder `style_transformer`: one embedding per clip that says how the instrument sounds.

CNN blocks (GroupNorm, so per-clip level and spectral balance survive: they are timbre) turn the
features into frame embeddings, a transformer reads them with a learned CLS token in front, and the CLS
output, projected, is the style embedding [B, dim]. The model system keeps a prototype per instrument
class (an EMA of these embeddings); this module only encodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from audiostyle.components.attention import EncoderLayer
from audiostyle.components.conv_blocks import FrameEmbedding
from audiostyle.platform.core.registry import register


@register("encoder", "style_transformer")
class StyleTransformer(nn.Module):
    """CNN + transformer + CLS token -> style embedding [B, dim] per clip."""

    def __init__(self, in_bins: int, num_classes: int = 2, dim: int = 256, num_layers: int = 4,
                 num_heads: int = 4, channels: Sequence[int] = (8, 16, 32, 64),
                 time_stride: int = 4, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        # Kept so the model system can check its prototype table against the encoder it was built with.
        self.num_classes = num_classes
        # Time stride 4: a clip-level summary does not need every frame, and the conv stack is most
        # of the encoder's cost, so 4x fewer frames is most of a 4x saving.
        self.embed = FrameEmbedding(in_bins, dim, channels, time_stride, norm="group")
        # std 0.02 like BERT/GPT; the research's std-1 CLS dwarfed LayerNorm-ed frame tokens.
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, feats: Tensor) -> Tensor:
        """feats [B, 2, T, in_bins] (normalised) -> style [B, dim]."""
        frames = self.embed(feats)
        x = torch.cat((self.cls.expand(frames.shape[0], -1, -1), frames), dim=1)
        pos = torch.arange(x.shape[1], device=x.device)
        for layer in self.layers:
            x = layer(x, pos)
        return self.head(self.norm(x[:, 0]))
