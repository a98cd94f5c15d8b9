"""The decoder `autoregressive_decoder`: a transformer that writes normalised STFT frames one patch at a time.

Each token is a patch of `patch_frames` consecutive STFT frames (real and imaginary, out_bins each).
Token n sees: the previous patch (its own output at inference), the content vectors of its own frames
(added directly, so the frame-to-frame changes of the content reach the output on a short path), the
style embedding (added, and modulating every LayerNorm), and banded cross-attention to nearby content.

Training is teacher forcing plus two-pass scheduled sampling: a first pass without gradients predicts
every patch, then a fraction `sampling_prob` of the previous-patch inputs is replaced by those
predictions, so the model learns to continue from its own output, which is what it gets at inference
(the research fed back hidden states at inference and ground truth in training).

Long sequences: self-attention looks back `attention_window` frames (128 = 1.5 s) and cross-attention
+-`cross_window` frames. Positions are rotary, so a 10 s clip (862 frames, 431 tokens) behaves like a
training crop; with the key/value cache each step costs the same at any length, so generation time
grows linearly. Without the cache every step re-runs the whole prefix (the quadratic baseline).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiostyle.components.attention import DecoderLayer, KVCache, StyleNorm
from audiostyle.platform.core.registry import register


class SpectrogramDecoderBase(nn.Module):
    """Patching, content alignment, layers and output head shared by the AR and parallel decoders."""

    def __init__(self, out_bins: int, content_dim: int, style_dim: int, dim: int, num_layers: int, num_heads: int,
                 patch_frames: int, cross_window: int, dropout: float):
        super().__init__()
        if patch_frames < 1:
            raise ValueError(f"patch_frames must be >= 1, got {patch_frames}")
        self.out_bins, self.patch, self.dim = out_bins, patch_frames, dim
        self.token_size = patch_frames * 2 * out_bins
        self.cross_window = cross_window
        self.content_in = nn.Linear(patch_frames * content_dim, dim)
        self.style_in = nn.Linear(style_dim, dim)
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, style_dim, content_dim, dropout) for _ in range(num_layers)
        )
        self.out_norm = StyleNorm(dim, style_dim)
        self.head = nn.Linear(dim, self.token_size)

    # -- layout -----------------------------------------------------------------------------------------
    def num_tokens(self, frames: int) -> int:
        return math.ceil(frames / self.patch)

    def frames_to_tokens(self, spec: Tensor) -> Tensor:
        """[B, 2, T, F] -> [B, N, P*2*F], zero-padding T up to a whole number of patches."""
        b, _, t, f = spec.shape
        if f != self.out_bins:
            raise ValueError(f"expected {self.out_bins} bins in the target, got {f}")
        x = spec.permute(0, 2, 1, 3).reshape(b, t, 2 * f)
        x = F.pad(x, (0, 0, 0, self.num_tokens(t) * self.patch - t))
        return x.reshape(b, -1, self.token_size)

    def tokens_to_frames(self, tokens: Tensor, frames: int) -> Tensor:
        b, n, _ = tokens.shape
        x = tokens.reshape(b, n * self.patch, 2, self.out_bins)[:, :frames]
        return x.permute(0, 2, 1, 3)

    def align_content(self, content: Tensor, frames: int) -> Tensor:
        """Content [B, T', dc] resampled (nearest) to exactly `frames` frames, one per STFT frame."""
        if content.shape[1] != frames:
            content = F.interpolate(content.transpose(1, 2), size=frames, mode="nearest").transpose(1, 2)
        return content

    def conditioning(self, content: Tensor, style: Tensor) -> Tensor:
        """Per-token input from the token's own content frames plus the style: [B, N, dim]."""
        b, t, dc = content.shape
        padded = F.pad(content, (0, 0, 0, self.num_tokens(t) * self.patch - t))
        return self.content_in(padded.reshape(b, -1, self.patch * dc)) + self.style_in(style).unsqueeze(1)

    def memory(self, content: Tensor) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
        """Cross-attention keys/values of every layer (computed once per clip) and their frame positions."""
        mem_pos = torch.arange(content.shape[1], device=content.device)
        return [layer.cross_attn.project_kv(content, mem_pos) for layer in self.layers], mem_pos

    def run_layers(self, x: Tensor, pos: Tensor, style: Tensor, memory: list[tuple[Tensor, Tensor]],
                   mem_pos: Tensor, *, self_back: int | None, self_ahead: int | None,
                   caches: list[KVCache] | None = None) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, pos, style, memory[i], mem_pos, self_back=self_back, self_ahead=self_ahead,
                      cross_window=self.cross_window, cache=caches[i] if caches is not None else None)
        return self.head(self.out_norm(x, style))

    def token_positions(self, start: int, count: int, device: torch.device) -> Tensor:
        # tokens sit at the frame index of their first frame, so rotary distances to content are in frames
        return torch.arange(start, start + count, device=device) * self.patch


@register("decoder", "autoregressive_decoder")
class AutoregressiveDecoder(SpectrogramDecoderBase):
    """Causal transformer over STFT-frame patches; content by cross-attention, style by AdaLN; KV cache."""

    def __init__(self, out_bins: int, content_dim: int, style_dim: int, dim: int = 256, num_layers: int = 4,
                 num_heads: int = 4, patch_frames: int = 2, attention_window: int = 128, cross_window: int = 32,
                 prev_dropout: float = 0.5, dropout: float = 0.1):
        super().__init__(out_bins, content_dim, style_dim, dim, num_layers, num_heads, patch_frames, cross_window,
                         dropout)
        self.window_tokens = max(1, math.ceil(attention_window / patch_frames))
        # Learned first "previous patch"; zeros is the normalised-domain mean, a neutral start.
        self.start = nn.Parameter(torch.zeros(self.token_size))
        # A narrow prenet with heavy dropout (Tacotron 2's trick): copying the previous frame is the
        # easiest way to lower a teacher-forced loss, and it fails at inference; dropout makes the
        # content path the reliable one.
        self.prenet = nn.Sequential(nn.Linear(self.token_size, dim // 2), nn.GELU(), nn.Dropout(prev_dropout),
                                    nn.Linear(dim // 2, dim))

    @property
    def self_back(self) -> int:
        return (self.window_tokens - 1) * self.patch  # in frame units, like the positions

    def _decode(self, prev: Tensor, cond: Tensor, style: Tensor, memory: list[tuple[Tensor, Tensor]],
                mem_pos: Tensor) -> Tensor:
        pos = self.token_positions(0, prev.shape[1], prev.device)
        x = self.prenet(prev) + cond
        return self.run_layers(x, pos, style, memory, mem_pos, self_back=self.self_back, self_ahead=0)

    def forward(self, content: Tensor, style: Tensor, target: Tensor, sampling_prob: float = 0.0,
                source: Tensor | None = None) -> Tensor:
        """Teacher-forced prediction of `target` [B, 2, T, out_bins] (normalised STFT), same shape out."""
        frames = target.shape[2]
        content = self.align_content(content, frames)
        cond = self.conditioning(content, style)
        memory, mem_pos = self.memory(content)
        tokens = self.frames_to_tokens(target)
        start = self.start.expand(tokens.shape[0], 1, -1)
        prev = torch.cat((start, tokens[:, :-1]), dim=1)
        if sampling_prob > 0.0 and self.training:
            with torch.no_grad():
                first = self._decode(prev, cond, style, memory, mem_pos)
            own = torch.cat((start, first[:, :-1]), dim=1)
            use_own = torch.rand(tokens.shape[0], tokens.shape[1], 1, device=tokens.device) < sampling_prob
            prev = torch.where(use_own, own, prev)
        return self.tokens_to_frames(self._decode(prev, cond, style, memory, mem_pos), frames)

    @torch.no_grad()
    def generate(self, content: Tensor, style: Tensor, num_frames: int, use_cache: bool = True,
                 source: Tensor | None = None) -> Tensor:
        """Free-running generation of [B, 2, num_frames, out_bins], each patch fed back as the next input."""
        content = self.align_content(content, num_frames)
        cond = self.conditioning(content, style)
        memory, mem_pos = self.memory(content)
        n_tokens = cond.shape[1]
        prev = self.start.expand(content.shape[0], 1, -1)
        outputs: list[Tensor] = []
        if use_cache:
            caches = [KVCache(max_len=self.window_tokens) for _ in self.layers]
            for n in range(n_tokens):
                pos = self.token_positions(n, 1, content.device)
                x = self.prenet(prev) + cond[:, n:n + 1]
                prev = self.run_layers(x, pos, style, memory, mem_pos, self_back=self.self_back, self_ahead=0,
                                       caches=caches)
                outputs.append(prev)
        else:
            inputs = prev
            for n in range(n_tokens):
                out = self._decode(inputs, cond[:, :n + 1], style, memory, mem_pos)[:, -1:]
                outputs.append(out)
                inputs = torch.cat((inputs, out), dim=1)
        return self.tokens_to_frames(torch.cat(outputs, dim=1), num_frames)
