"""Transformer layers shared by the encoders and decoders: rotary multi-head attention with banded masks
and a key/value cache, pre-norm encoder layers, and style-modulated decoder layers.

Positions are rotary (relative), not absolute: models train on 2-4 s crops and run on 10 s clips, and a
relative encoding inside a bounded attention window behaves the same at frame 50 and at frame 800.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def rotary_tables(positions: Tensor, head_dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos/sin tables [L, head_dim/2] for integer positions (RoPE, Su et al. 2021)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim))
    angles = positions.float()[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs of x [B, H, L, Dh] by position-dependent angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    rotated = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.flatten(-2)


def band_mask(q_pos: Tensor, k_pos: Tensor, back: int | None, ahead: int | None) -> Tensor | None:
    """Boolean [Lq, Lk] mask allowing k_pos in [q_pos - back, q_pos + ahead]; None means unbounded."""
    if back is None and ahead is None:
        return None
    rel = k_pos[None, :] - q_pos[:, None]
    allowed = torch.ones_like(rel, dtype=torch.bool)
    if back is not None:
        allowed &= rel >= -back
    if ahead is not None:
        allowed &= rel <= ahead
    return allowed


@dataclass
class KVCache:
    """Rotated keys and values of past positions for one self-attention layer, trimmed to a window."""

    keys: Tensor | None = None  # [B, H, L, Dh]
    values: Tensor | None = None
    positions: Tensor | None = None  # [L]
    max_len: int | None = None  # keep only the newest entries: constant memory and cost per step

    def append(self, k: Tensor, v: Tensor, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.keys is None:
            self.keys, self.values, self.positions = k, v, pos
        else:
            self.keys = torch.cat((self.keys, k), dim=2)
            self.values = torch.cat((self.values, v), dim=2)
            self.positions = torch.cat((self.positions, pos))
        if self.max_len is not None and self.positions.numel() > self.max_len:
            self.keys = self.keys[:, :, -self.max_len:]
            self.values = self.values[:, :, -self.max_len:]
            self.positions = self.positions[-self.max_len:]
        return self.keys, self.values, self.positions


class Attention(nn.Module):
    """Multi-head attention with rotary positions on queries and keys, self or cross."""

    def __init__(self, dim: int, num_heads: int, kv_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"dim {dim} must split into {num_heads} heads of even size")
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, source: Tensor, k_pos: Tensor) -> tuple[Tensor, Tensor]:
        """Rotated keys and values [B, H, L, Dh] (computed once per clip for cross-attention)."""
        k, v = self.kv(source).chunk(2, dim=-1)
        cos, sin = rotary_tables(k_pos, self.head_dim)
        return apply_rotary(self._heads(k), cos, sin), self._heads(v)

    def attend(self, x: Tensor, q_pos: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        cos, sin = rotary_tables(q_pos, self.head_dim)
        q = apply_rotary(self._heads(self.q(x)), cos, sin)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.out(y.transpose(1, 2).flatten(2))

    def forward(self, x: Tensor, pos: Tensor, *, back: int | None = None, ahead: int | None = None,
                cache: KVCache | None = None) -> Tensor:
        """Self-attention over x [B, L, D] at positions pos [L]; with a cache, x holds only new positions."""
        k, v = self.project_kv(x, pos)
        k_pos = pos
        if cache is not None:
            k, v, k_pos = cache.append(k, v, pos)
        return self.attend(x, pos, k, v, band_mask(pos, k_pos, back, ahead))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * dim, dim))


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + feed-forward (pre-norm trains stably without the research's tiny init)."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1, window: int | None = None):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        # no dropout on attention weights: its [B, H, L, L] random mask was ~15% of a CPU training step,
        # and the residual dropout below regularises as well
        self.attn = Attention(dim, num_heads)
        self.ff = FeedForward(dim, dropout=dropout)
        self.drop = nn.Dropout(dropout)
        self.window = window  # None: every token sees the whole clip

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), pos, back=self.window, ahead=self.window))
        return x + self.drop(self.ff(self.norm2(x)))


class StyleNorm(nn.Module):
    """LayerNorm whose scale and shift come from the style embedding (adaptive LayerNorm).

    Zero-initialised, so it starts as a plain LayerNorm; it gives style a multiplicative path into every
    layer, which a single additive input token (the research's class memory) did not.
    """

    def __init__(self, dim: int, style_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.to_scale_shift = nn.Linear(style_dim, 2 * dim)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        scale, shift = self.to_scale_shift(style).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class DecoderLayer(nn.Module):
    """Style-modulated pre-norm layer: (causal) self-attention, banded cross-attention to content, FF."""

    def __init__(self, dim: int, num_heads: int, style_dim: int, memory_dim: int, dropout: float = 0.1):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (StyleNorm(dim, style_dim) for _ in range(3))
        self.self_attn = Attention(dim, num_heads)  # residual dropout only, as in EncoderLayer
        self.cross_attn = Attention(dim, num_heads, kv_dim=memory_dim)
        self.ff = FeedForward(dim, dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, style: Tensor, memory_kv: tuple[Tensor, Tensor], mem_pos: Tensor, *,
                self_back: int | None, self_ahead: int | None, cross_window: int | None,
                cache: KVCache | None = None) -> Tensor:
        h = self.norm1(x, style)
        x = x + self.drop(self.self_attn(h, pos, back=self_back, ahead=self_ahead, cache=cache))
        k, v = memory_kv
        if cache is not None and cross_window is not None and pos.numel() == 1:
            # one new query: slice its band of the memory instead of masking all of it, so each
            # generated step costs the same however long the clip is
            q = int(pos.item())
            lo = max(0, q - cross_window)
            hi = min(mem_pos.numel(), q + cross_window + 1)
            k, v, mem_pos = k[:, :, lo:hi], v[:, :, lo:hi], mem_pos[lo:hi]
        mask = band_mask(pos, mem_pos, cross_window, cross_window)
        x = x + self.drop(self.cross_attn.attend(self.norm2(x, style), pos, k, v, mask))
        return x + self.drop(self.ff(self.norm3(x, style)))
