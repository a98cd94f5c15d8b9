"""The model system: front end, encoders, decoder, discriminator and losses assembled from a config, and
the operations the training loop, validation, export and transfer call on them.

Everything is built through the registry with the config-derived arguments injected (sample rate, bin
counts, class count, embedding sizes), so a third instrument or another decoder is a YAML change.
Labels are used only by losses and metrics: the front end normalises with pooled statistics, never
per instrument (the research needed the label to normalise and so could not run on unlabelled audio).
The statistics are an argument of `build_timbre_model`: the caller loads them (stats/ does), so this
module needs no data. Orchestration (training, export, transfer, logging) uses the model only through
its methods (`style_of`, `transfer`, `normalization_stats`, `set_prototypes`, `prototype`, ...), never
through its submodules or buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from audiostyle.platform.config.schema import ExperimentConfig
from audiostyle.platform.core.registry import build

Statistics = tuple[Tensor | np.ndarray, Tensor | np.ndarray]  # (mean, std), each [2, num_bins]

ROLES = ("reconstruction", "infonce", "margin", "hsic", "adversarial")
# Content frames per clip paired with the clip's style for HSIC (see `hsic_pairs`).
HSIC_FRAMES_PER_CLIP = 4


def class_means(x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(classes present [K], mean of x per present class [K, d])."""
    classes, index = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(classes.numel(), x.shape[1], device=x.device, dtype=x.dtype).index_add(0, index, x)
    counts = torch.bincount(index, minlength=classes.numel()).to(x.dtype)
    return classes, sums / counts[:, None]


def hsic_pairs(style: Tensor, content: Tensor, frames_per_clip: int = HSIC_FRAMES_PER_CLIP) -> tuple[Tensor, Tensor]:
    """(style [B*k, ds], content frames [B*k, dc]): each clip's style beside k evenly spaced content frames.

    Content is instance-normalised over time, so its time mean is zero for every clip and an HSIC on
    time-pooled content would be identically zero. Pairing frames with their clip's style measures what
    HSIC is meant to: whether individual content frames reveal the instrument.
    """
    b, t, _ = content.shape
    idx = torch.linspace(0, t - 1, min(frames_per_clip, t), device=content.device).round().long()
    frames = content[:, idx].reshape(b * idx.numel(), -1)
    return style.repeat_interleave(idx.numel(), dim=0), frames


class TimbreTransferModel(nn.Module):
    """Front end + style/content encoders + decoder + discriminator + losses, and per-class prototypes."""

    def __init__(self, frontend: nn.Module, style_encoder: nn.Module, content_encoder: nn.Module,
                 decoder: nn.Module, discriminator: nn.Module, losses: dict[str, nn.Module],
                 instruments: list[str], prototype_momentum: float = 0.99):
        super().__init__()
        self.frontend = frontend
        self.style_encoder = style_encoder
        self.content_encoder = content_encoder
        self.decoder = decoder
        self.discriminator = discriminator
        self.losses = nn.ModuleDict(losses)
        self.instruments = list(instruments)
        self.prototype_momentum = prototype_momentum
        num_classes = len(self.instruments)
        # EMA of each class's style embedding while training; export recomputes them on the training set.
        self.register_buffer("prototypes", torch.zeros(num_classes, style_encoder.dim))
        self.register_buffer("prototype_seen", torch.zeros(num_classes, dtype=torch.bool))

    # -- encoding -----------------------------------------------------------------------------------------
    def features(self, audio: Tensor) -> Tensor:
        """Normalised STFT+CQT features [B, 2, T, num_bins] of waveforms [B, N]."""
        return self.frontend(audio)

    def stft_part(self, feats: Tensor) -> Tensor:
        return feats[..., : self.frontend.stft_bins]

    def style_of(self, audio: Tensor) -> Tensor:
        """Style embeddings [B, style_dim] of waveforms [B, N]."""
        return self.style_encoder(self.features(audio))

    @property
    def style_dim(self) -> int:
        """Size of a style embedding (and of each prototype)."""
        return int(self.prototypes.shape[1])

    # -- statistics and prototypes: what checkpoints, bundles and transfer read and set ---------------------
    def normalization_stats(self) -> tuple[Tensor, Tensor]:
        """(mean, std) [2, num_bins] the front end normalises with, as CPU copies (a checkpoint records them)."""
        return self.frontend.mean.detach().cpu().clone(), self.frontend.std.detach().cpu().clone()

    @torch.no_grad()
    def set_prototypes(self, prototypes: Tensor) -> None:
        """Install per-instrument style prototypes [C, style_dim] (export computes them on the training
        set) and mark every instrument as seen, so validation and transfer use them as they are."""
        if tuple(prototypes.shape) != tuple(self.prototypes.shape):
            raise ValueError(f"prototypes shaped {tuple(prototypes.shape)}, the model holds "
                             f"{tuple(self.prototypes.shape)} (instruments x style_dim)")
        self.prototypes.copy_(prototypes.to(self.prototypes))
        self.prototype_seen.fill_(True)

    def prototype(self, instrument: int | str) -> Tensor:
        """The style prototype [style_dim] of one instrument, by class index or name."""
        index = self.instruments.index(instrument) if isinstance(instrument, str) else int(instrument)
        return self.prototypes[index]

    def prototypes_for(self, labels: Tensor | Sequence[int]) -> Tensor:
        """Prototypes [B, style_dim] of a batch of class indices (e.g. each clip's transfer target)."""
        index = labels if torch.is_tensor(labels) else torch.tensor(list(labels), device=self.prototypes.device)
        return self.prototypes[index]

    # -- training -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def update_prototypes(self, style: Tensor, labels: Tensor) -> None:
        """EMA of the per-class mean style; a class's first batch sets its prototype outright."""
        present, means = class_means(style.detach(), labels)
        m = self.prototype_momentum
        for cls, mean in zip(present.tolist(), means, strict=True):
            if self.prototype_seen[cls]:
                self.prototypes[cls].mul_(m).add_(mean, alpha=1 - m)
            else:
                self.prototypes[cls].copy_(mean)
                self.prototype_seen[cls] = True

    def generator_terms(self, audio: Tensor, labels: Tensor, *, sampling_prob: float = 0.0,
                        active: set[str] | frozenset[str] = frozenset(ROLES)) -> dict[str, Tensor]:
        """Unweighted losses for the roles in `active` (only those are computed) + detached "diag/" values.

        The decoder is conditioned on each clip's own style embedding (reconstruction), so the style
        path carries gradient from the first step and the decoder learns to use it.
        """
        unknown = set(active) - set(self.losses)
        if unknown:
            raise KeyError(f"loss roles {sorted(unknown)} are not built; built: {sorted(self.losses)}")
        feats = self.features(audio)
        target = self.stft_part(feats)
        style = self.style_encoder(feats)
        content = self.content_encoder(feats)
        out: dict[str, Tensor] = {}
        if "reconstruction" in active:
            pred = self.decoder(content, style, target, sampling_prob=sampling_prob)
            out["reconstruction"] = self.reconstruction(pred, target, audio)
            out["diag/time_variation"] = time_variation_ratio(pred.detach(), target)
        if "infonce" in active:
            out["infonce"] = self.losses["infonce"](style, labels)
        if "margin" in active:
            out["margin"] = self.losses["margin"](style, labels)
        if "hsic" in active:
            out["hsic"] = self.losses["hsic"](*hsic_pairs(style, content))
        if "adversarial" in active:
            # The discriminator runs as a fixed function (detached weights): this term trains the content
            # encoder only; the discriminator's own weights are trained by `discriminator_loss`.
            fixed = {name: p.detach() for name, p in self.discriminator.named_parameters()}
            logits = functional_call(self.discriminator, fixed, (content,))
            out["adversarial"] = self.losses["adversarial"](logits, labels)
        if self.training:
            self.update_prototypes(style, labels)
        out["diag/style_norm"] = style.detach().norm(dim=-1).mean()
        # content is unit-variance over time per clip by construction; its frame-to-frame change is what
        # collapses (towards 0) if the content path stops carrying notes
        out["diag/content_change"] = (content[:, 1:] - content[:, :-1]).detach().pow(2).mean()
        return out

    def reconstruction(self, pred: Tensor, target: Tensor, audio: Tensor) -> Tensor:
        """The reconstruction loss on normalised STFT features, plus waveform terms (multi-resolution
        STFT) through the front end's inverse: the input audio is the target waveform."""
        pred_wave = self.frontend.synthesize(pred, audio.shape[-1])
        return self.losses["reconstruction"](pred, target, pred_wave, audio.float())

    def discriminator_loss(self, audio: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of the discriminator classifying the instrument from (detached) content."""
        with torch.no_grad():
            content = self.content_encoder(self.features(audio))
        logits = self.discriminator(content)
        adversarial = self.losses["adversarial"] if "adversarial" in self.losses else None
        if adversarial is not None and hasattr(adversarial, "discriminator_loss"):
            return adversarial.discriminator_loss(logits, labels)
        return F.cross_entropy(logits.float(), labels)

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.discriminator.parameters())

    def generator_parameters(self) -> list[nn.Parameter]:
        """Every trainable parameter outside the discriminator (encoders, decoder, learnable loss parts)."""
        disc = {id(p) for p in self.discriminator.parameters()}
        return [p for p in self.parameters() if id(p) not in disc and p.requires_grad]

    # -- evaluation and inference ---------------------------------------------------------------------------
    def reference_prototypes(self, style: Tensor, labels: Tensor) -> Tensor:
        """Prototypes for classification: the EMA ones where trained, else this batch's class means."""
        protos = self.prototypes.clone()
        present, means = class_means(style, labels)
        for cls, mean in zip(present.tolist(), means, strict=True):
            if not self.prototype_seen[cls]:
                protos[cls] = mean
        return protos

    @torch.no_grad()
    def validation_metrics(self, audio: Tensor, labels: Tensor, *, generate: bool = True) -> dict[str, float]:
        """recon (free-running generation vs target, the inference path), recon_teacher_forced,
        style_acc (nearest prototype by cosine), content_leak (discriminator accuracy on content; chance
        1/C is ideal), time_variation, and every loss term."""
        feats = self.features(audio)
        target = self.stft_part(feats)
        style = self.style_encoder(feats)
        content = self.content_encoder(feats)
        teacher = self.decoder(content, style, target)
        pred = self.decoder.generate(content, style, target.shape[2]) if generate else teacher
        protos = self.reference_prototypes(style, labels)
        sims = F.normalize(style, dim=-1) @ F.normalize(protos, dim=-1).T
        leak = self.discriminator(content).argmax(dim=-1)
        metrics = {
            "recon": float(self.reconstruction(pred, target, audio)),
            "recon_teacher_forced": float(self.reconstruction(teacher, target, audio)),
            "style_acc": float((sims.argmax(dim=-1) == labels).float().mean()),
            "content_leak": float((leak == labels).float().mean()),
            "time_variation": float(time_variation_ratio(pred, target)),
        }
        terms = self.generator_terms(audio, labels, active=set(self.losses))
        metrics.update({k: float(v) for k, v in terms.items() if not k.startswith("diag/")})
        return metrics

    @torch.no_grad()
    def transfer(self, audio: Tensor, target_style: Tensor, *, use_cache: bool = True) -> Tensor:
        """Waveforms [B, N] re-played with `target_style` [B, style_dim] (e.g. a prototype): content of
        the input, style given, generated autoregressively and inverted by the front end."""
        feats = self.features(audio)
        content = self.content_encoder(feats)
        if target_style.dim() == 1:
            target_style = target_style.expand(audio.shape[0], -1)
        spec = self.decoder.generate(content, target_style, feats.shape[2], use_cache=use_cache)
        return self.frontend.synthesize(spec, audio.shape[-1])


def time_variation_ratio(pred: Tensor, target: Tensor) -> Tensor:
    """Frame-to-frame variation of the predicted log-magnitude over the target's (0 = flat in time, the
    research's failure; about 1 = as lively as the target)."""

    def variation(spec: Tensor) -> Tensor:
        logmag = torch.log1p(torch.sqrt(spec[:, 0] ** 2 + spec[:, 1] ** 2 + 1e-8))
        return (logmag[:, 1:] - logmag[:, :-1]).pow(2).mean()

    return variation(pred) / variation(target).clamp_min(1e-8)


def build_timbre_model(cfg: ExperimentConfig, *, stats: Statistics | None = None) -> TimbreTransferModel:
    """Build every part from `cfg` through the registry, injecting the sizes that follow from the config.

    stats: (mean, std) the front end normalises with, as `audiostyle.stats.normalization_stats.
    load_stats(cfg)` pools them from the instruments' statistics files. None leaves identity statistics,
    for callers that restore them from a checkpoint's or bundle's state_dict (they are buffers there).
    """
    m = cfg.model
    sr = cfg.data.sample_rate
    num_classes = len(cfg.instruments)
    frontend = build("frontend", m.frontend, path="model.frontend", sample_rate=sr)
    if stats is not None:
        frontend.set_stats(*stats)
    style = build("encoder", m.style_encoder, path="model.style_encoder", in_bins=frontend.num_bins,
                  num_classes=num_classes)
    content = build("encoder", m.content_encoder, path="model.content_encoder", in_bins=frontend.num_bins,
                    num_classes=num_classes)
    decoder = build("decoder", m.decoder, path="model.decoder", out_bins=frontend.stft_bins,
                    content_dim=content.dim, style_dim=style.dim)
    disc = build("discriminator", m.discriminator, path="model.discriminator", in_dim=content.dim,
                 num_classes=num_classes)
    losses = {role: build("loss", spec, path=f"losses.{role}", sample_rate=sr) for role, spec in cfg.losses.items()}
    return TimbreTransferModel(frontend, style, content, decoder, disc, losses, cfg.instrument_names)
