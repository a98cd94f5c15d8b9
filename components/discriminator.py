"""The discriminator `mlp_discriminator`: guesses the instrument class from an embedding or a sequence.

It has one output per instrument in the experiment (num_classes comes from the instrument list, never
from YAML: the research hard-coded 2). A sequence [B, T, d] is pooled over time AFTER the first layer:
the content encoder instance-normalises its output over time, so the plain time mean of content is
exactly zero and a discriminator fed that mean would see nothing and report a perfect (fake) chance
level. Pooling per-frame features after a nonlinearity keeps what the frames reveal.
"""

from __future__ import annotations

from torch import Tensor, nn

from audiostyle.platform.core.registry import register


@register("discriminator", "mlp_discriminator")
class MLPDiscriminator(nn.Module):
    """MLP classifier over [B, d] vectors or [B, T, d] sequences (mean-pooled over time) -> [B, num_classes]."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, num_layers: int = 3, dropout: float = 0.1):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a discriminator needs at least 2 classes, got {num_classes}")
        if num_layers < 2:
            raise ValueError(f"num_layers must be >= 2 (frame layer + classifier), got {num_layers}")
        self.in_dim, self.num_classes = in_dim, num_classes
        self.frame_layer = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2))
        body: list[nn.Module] = []
        for _ in range(num_layers - 2):
            body += [nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*body)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, z: Tensor) -> Tensor:
        if z.shape[-1] != self.in_dim or z.dim() not in (2, 3):
            raise ValueError(f"expected [B, {self.in_dim}] or [B, T, {self.in_dim}], got {list(z.shape)}")
        h = self.frame_layer(z)
        if h.dim() == 3:
            h = h.mean(dim=1)
        return self.classifier(self.body(h))
