"""The decoder `parallel_decoder`: the non-autoregressive comparison for `autoregressive_decoder`.

Same layers, patching, content alignment and style modulation, but every patch is predicted at once from
content and style alone, with bidirectional windowed self-attention. It cannot drift the way a
free-running decoder can, and cannot use its own previous output either: the ablation
experiments/ablations/parallel_decoder.yaml measures which matters more.
"""

from __future__ import annotations

import torch
from torch import Tensor

from audiostyle.components.autoregressive_decoder import SpectrogramDecoderBase
from audiostyle.platform.core.registry import register


@register("decoder", "parallel_decoder")
class ParallelDecoder(SpectrogramDecoderBase):
    """Non-autoregressive transformer decoder: content + style -> all STFT-frame patches in one pass."""

    def __init__(self, out_bins: int, content_dim: int, style_dim: int, dim: int = 256, num_layers: int = 4,
                 num_heads: int = 4, patch_frames: int = 2, attention_window: int = 128, cross_window: int = 32,
                 dropout: float = 0.1):
        super().__init__(out_bins, content_dim, style_dim, dim, num_layers, num_heads, patch_frames, cross_window,
                         dropout)
        self.attention_window = attention_window  # frames either side, like the encoders' windows

    def _predict(self, content: Tensor, style: Tensor, frames: int) -> Tensor:
        content = self.align_content(content, frames)
        x = self.conditioning(content, style)
        memory, mem_pos = self.memory(content)
        pos = self.token_positions(0, x.shape[1], x.device)
        tokens = self.run_layers(x, pos, style, memory, mem_pos, self_back=self.attention_window,
                                 self_ahead=self.attention_window)
        return self.tokens_to_frames(tokens, frames)

    def forward(self, content: Tensor, style: Tensor, target: Tensor, sampling_prob: float = 0.0,
                source: Tensor | None = None) -> Tensor:
        """Prediction shaped like `target` [B, 2, T, out_bins]; the target gives only the length here
        and `sampling_prob` is accepted for interface parity (there is no previous output to feed)."""
        return self._predict(content, style, target.shape[2])

    @torch.no_grad()
    def generate(self, content: Tensor, style: Tensor, num_frames: int, use_cache: bool = True,
                 source: Tensor | None = None) -> Tensor:
        """The forward pass without a target; `use_cache` is meaningless here and ignored."""
        return self._predict(content, style, num_frames)
