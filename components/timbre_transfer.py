"""The model system: front end, encoders, decoder, discriminator and losses assembled from a config, and
the operations the training loop, validation, export and transfer call on them.

Everything is built through the registry with the config-derived arguments injected (sample rate, bin
counts, class count, embedding sizes), so a third instrument or another decoder is a YAML change.
Labels are used only by losses and metrics: the front end normalises with pooled statistics, never
per instrument (the research needed the label to normalise and so could not run on unlabelled audio).
The statistics are an argument of `build_timbre_model`: the caller loads them (stats/ does), so this
module needs no data.

Pairs (the same passage on two instruments) train the `cross_reconstruction` role: the content of the
source clip, conditioned on the target instrument's style (its mean style in the batch, which is what
a prototype is at transfer time), must give the target clip's features. Unpaired clips train the
`reconstruction` role and the disentangling terms, so an instrument with no pairs still trains.

Orchestration (training, export, transfer, logging) uses the model only through its methods (`style_of`,
`transfer`, `normalization_stats`, `set_prototypes`, `prototype`, ...), never through its submodules or
buffers.
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

Statistics = tuple[Tensor | np.ndarray, Tensor | np.ndarray]  # (mean, std), each [channels, num_bins]

ROLES = ("reconstruction", "cross_reconstruction", "infonce", "margin", "hsic", "adversarial")
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
                        active: set[str] | frozenset[str] | None = None, pair_source: Tensor | None = None,
                        pair_target: Tensor | None = None, pair_source_label: Tensor | None = None,
                        pair_target_label: Tensor | None = None) -> dict[str, Tensor]:
        """Unweighted losses for the roles in `active` (only those are computed) + detached "diag/" values.

        The decoder is conditioned on each clip's own style embedding (reconstruction), so the style
        path carries gradient from the first step and the decoder learns to use it. `pair_*` are a
        batch of aligned passages (source and target waveforms [P, N], their labels [P]) for
        `cross_reconstruction`; without them that role is not computed. `active` defaults to every built role.
        """
        active = set(self.losses) if active is None else set(active)
        unknown = active - set(self.losses)
        if unknown:
            raise KeyError(f"loss roles {sorted(unknown)} are not built; built: {sorted(self.losses)}")
        feats = self.features(audio)
        target = self.stft_part(feats)
        style = self.style_encoder(feats)
        content = self.content_encoder(feats)
        out: dict[str, Tensor] = {}
        if "reconstruction" in active:
            pred = self.decoder(content, style, target, sampling_prob=sampling_prob, source=feats)
            out["reconstruction"] = self.reconstruction(pred, target, audio)
            out["diag/time_variation"] = time_variation_ratio(pred.detach(), target)
        if "cross_reconstruction" in active and pair_source is not None:
            out.update(self.cross_terms(pair_source, pair_target, pair_target_label, style, labels,
                                        sampling_prob=sampling_prob))
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

    def reconstruction(self, pred: Tensor, target: Tensor, audio: Tensor, *, role: str = "reconstruction",
                       source_audio: Tensor | None = None, as_metric: bool = False) -> Tensor:
        """A reconstruction loss on front-end features; losses that compare waveforms (`needs_waveforms`)
        also get the prediction through the front end's inverse, with `audio` as the target waveform and
        the phase (for magnitude front ends) taken from `source_audio` (default: `audio`). `as_metric`:
        the loss's metric form (`as_metric()`, e.g. without onset weights), the same whatever the
        configuration weighs, so validation numbers compare across runs."""
        loss = self.losses[role]
        if as_metric and hasattr(loss, "as_metric"):
            loss = loss.as_metric()
        if not getattr(loss, "needs_waveforms", True):
            return loss(pred, target)
        reference = audio if source_audio is None else source_audio
        pred_wave = self.frontend.synthesize(pred, audio.shape[-1], reference=reference)
        return loss(pred, target, pred_wave, audio.float())

    def target_styles(self, target_labels: Tensor, *styles_and_labels: tuple[Tensor, Tensor]) -> Tensor:
        """Each target label's mean style over the given (style, labels) sets [P, style_dim].

        The mean over several clips, not the paired target's own embedding, is what conditions the decoder
        at transfer time (a prototype), and it cannot smuggle the target passage's details into the decoder.
        """
        style = torch.cat([s for s, _ in styles_and_labels])
        labels = torch.cat([lab for _, lab in styles_and_labels])
        classes, means = class_means(style, labels)
        return means[torch.searchsorted(classes, target_labels)]

    def cross_terms(self, pair_source: Tensor, pair_target: Tensor, pair_target_label: Tensor, style: Tensor,
                    labels: Tensor, *, sampling_prob: float = 0.0) -> dict[str, Tensor]:
        """`cross_reconstruction`: content of each source passage + its target instrument's style ->
        the target passage's features (and a time-variation diagnostic)."""
        src = self.features(pair_source)
        tgt = self.features(pair_target)
        target = self.stft_part(tgt)
        tgt_style = self.style_encoder(tgt)
        cond = self.target_styles(pair_target_label, (style, labels), (tgt_style, pair_target_label))
        pred = self.decoder(self.content_encoder(src), cond, target, sampling_prob=sampling_prob, source=src)
        if self.training:
            self.update_prototypes(tgt_style, pair_target_label)
        loss = self.reconstruction(pred, target, pair_target, role="cross_reconstruction", source_audio=pair_source)
        return {"cross_reconstruction": loss, "diag/cross_time_variation": time_variation_ratio(pred.detach(), target)}

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
    def validation_metrics(self, audio: Tensor, labels: Tensor, *, generate: bool = True,
                           **pairs: Tensor) -> dict[str, float]:
        """recon (free-running generation vs target, the inference path), recon_teacher_forced,
        style_acc (nearest prototype by cosine), content_leak (discriminator accuracy on content; chance
        1/C is ideal), time_variation, every loss term, and with `pair_*` tensors (see generator_terms)
        cross_recon: the transfer itself (source content + the target's prototype) against the target."""
        feats = self.features(audio)
        target = self.stft_part(feats)
        style = self.style_encoder(feats)
        content = self.content_encoder(feats)
        teacher = self.decoder(content, style, target, source=feats)
        pred = self.decoder.generate(content, style, target.shape[2], source=feats) if generate else teacher
        protos = self.reference_prototypes(style, labels)
        sims = F.normalize(style, dim=-1) @ F.normalize(protos, dim=-1).T
        leak = self.discriminator(content).argmax(dim=-1)
        metrics = {
            "recon": float(self.reconstruction(pred, target, audio, as_metric=True)),
            "recon_teacher_forced": float(self.reconstruction(teacher, target, audio, as_metric=True)),
            "style_acc": float((sims.argmax(dim=-1) == labels).float().mean()),
            "content_leak": float((leak == labels).float().mean()),
            "time_variation": float(time_variation_ratio(pred, target)),
        }
        terms = self.generator_terms(audio, labels, active=set(self.losses), **pairs)
        metrics.update({k: float(v) for k, v in terms.items() if not k.startswith("diag/")})
        if pairs.get("pair_source") is not None and "cross_reconstruction" in self.losses:
            metrics["cross_recon"] = self.transfer_loss(pairs["pair_source"], pairs["pair_target"],
                                                        pairs["pair_target_label"])
        return metrics

    @torch.no_grad()
    def transfer_loss(self, source: Tensor, target: Tensor, target_labels: Tensor) -> float:
        """The cross_reconstruction loss of the transfer path (its metric form: see `reconstruction`):
        source content + the target instrument's prototype, generated as at inference, against the paired
        target's features."""
        src, tgt = self.features(source), self.features(target)
        pred = self.decoder.generate(self.content_encoder(src), self.prototypes_for(target_labels), src.shape[2],
                                     source=src)
        return float(self.reconstruction(pred, self.stft_part(tgt), target, role="cross_reconstruction",
                                         source_audio=source, as_metric=True))

    @torch.no_grad()
    def transfer(self, audio: Tensor, target_style: Tensor, *, use_cache: bool = True) -> Tensor:
        """Waveforms [B, N] re-played with `target_style` [B, style_dim] (e.g. a prototype): content of
        the input, style given, generated autoregressively and inverted by the front end."""
        feats = self.features(audio)
        content = self.content_encoder(feats)
        if target_style.dim() == 1:
            target_style = target_style.expand(audio.shape[0], -1)
        spec = self.decoder.generate(content, target_style, feats.shape[2], use_cache=use_cache, source=feats)
        return self.frontend.synthesize(spec, audio.shape[-1], reference=audio)


def time_variation_ratio(pred: Tensor, target: Tensor) -> Tensor:
    """Frame-to-frame variation of the predicted log-magnitude over the target's (0 = flat in time, the
    research's failure; about 1 = as lively as the target)."""

    def variation(spec: Tensor) -> Tensor:
        # [B, 2, T, F] real/imaginary parts, or [B, 1, T, F] log-magnitudes already
        logmag = torch.log1p(torch.sqrt(spec[:, 0] ** 2 + spec[:, 1] ** 2 + 1e-8)) if spec.shape[1] == 2 else spec[:, 0]
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
    channels = frontend.channels  # 2 for complex features, 1 for log-magnitudes
    style = build("encoder", m.style_encoder, path="model.style_encoder", in_bins=frontend.num_bins,
                  in_channels=channels, num_classes=num_classes)
    content = build("encoder", m.content_encoder, path="model.content_encoder", in_bins=frontend.num_bins,
                    in_channels=channels, num_classes=num_classes)
    decoder = build("decoder", m.decoder, path="model.decoder", out_bins=frontend.stft_bins,
                    out_channels=channels, content_dim=content.dim, style_dim=style.dim)
    disc = build("discriminator", m.discriminator, path="model.discriminator", in_dim=content.dim,
                 num_classes=num_classes)
    losses = {role: build("loss", spec, path=f"losses.{role}", sample_rate=sr) for role, spec in cfg.losses.items()}
    return TimbreTransferModel(frontend, style, content, decoder, disc, losses, cfg.instrument_names)
