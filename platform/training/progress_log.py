"""What a training run shows a person: the live progress line and TensorBoard (scalars, audio, spectrograms).

Only rank 0 logs (the training loop passes `enabled=False` elsewhere), so one run writes one TensorBoard
event stream under `<storage>/<run>/tensorboard` and one progress line per `log_every` steps. The model is
used only through its public methods (`style_of`, `transfer`, `prototypes_for`), never its internals.
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from audiostyle.components.timbre_transfer import TimbreTransferModel

logger = logging.getLogger("audiostyle.train")


class ProgressMeter:
    """Samples per second over the interval since the last reading (not since start: resumes stay honest)."""

    def __init__(self) -> None:
        self._t = time.perf_counter()
        self._samples = 0

    def add(self, samples: int) -> None:
        self._samples += samples

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self._samples / max(now - self._t, 1e-9)
        self._t, self._samples = now, 0
        return rate


def progress_line(run: str, step: int, max_steps: int, phase: str, losses: dict[str, float], total: float,
                  samples_per_s: float, lr: float, workers: int | None = None) -> str:
    """One line per log_every steps; `workers` (elastic runs) says how many workers the step ran on."""
    terms = " ".join(f"{k.split('/', 1)[-1]} {v:.4f}" for k, v in sorted(losses.items()))
    group = f" | {workers} worker{'s' if workers != 1 else ''}" if workers is not None else ""
    return (f"[{run}] step {step}/{max_steps} | {phase} | loss {total:.4f} ({terms}) | "
            f"{samples_per_s:.1f} samples/s | lr {lr:.2e}{group}")


def _spectrogram_png(waves: list[np.ndarray], titles: list[str], sample_rate: int) -> np.ndarray:
    """Log-magnitude spectrograms side by side, rendered to an HWC uint8 image with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")  # workers have no display
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(waves), figsize=(4 * len(waves), 3), squeeze=False)
    for ax, wave, title in zip(axes[0], waves, titles):
        spec = torch.stft(torch.from_numpy(wave).float(), n_fft=1024, hop_length=256,
                          window=torch.hann_window(1024), return_complex=True).abs()
        db = 20 * torch.log10(spec.clamp_min(1e-5)).numpy()
        ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
                  extent=(0, len(wave) / sample_rate, 0, sample_rate / 2000))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("s")
        ax.set_ylabel("kHz")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    buf.seek(0)
    import matplotlib.image as mpimg

    image = mpimg.imread(buf, format="png")
    return (image[..., :3] * 255).astype(np.uint8)


class TrainingLogger:
    """TensorBoard writer plus progress printing for rank 0; a no-op on other ranks."""

    def __init__(self, log_dir: str | Path | None, *, enabled: bool, run_name: str, sample_rate: int,
                 instruments: list[str]):
        self.rank_zero = enabled
        self.run_name = run_name
        self.sample_rate = sample_rate
        self.instruments = instruments
        self.writer = None
        if enabled and log_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def progress(self, line: str) -> None:
        if self.rank_zero:
            # a logger, not print: Ray Train both tees print() to stdout and logs it, doubling each line
            logger.info(line)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    @torch.no_grad()
    def examples(self, step: int, model: TimbreTransferModel, audio: torch.Tensor, labels: torch.Tensor,
                 count: int) -> None:
        """Input, reconstruction (own style) and transfer (next instrument's prototype) as audio and images."""
        if self.writer is None or count <= 0:
            return
        was_training = model.training
        model.eval()
        try:
            # one clip per instrument first (batches are grouped by instrument), then the rest in order
            firsts = [int((labels == c).nonzero()[0]) for c in labels.unique(sorted=True).tolist()]
            order = firsts + [i for i in range(len(labels)) if i not in firsts]
            pick = torch.tensor(order[:count], device=labels.device)
            audio, labels = audio[pick], labels[pick]
            recon = model.transfer(audio, model.style_of(audio))
            num_classes = len(self.instruments)
            targets = (labels + 1) % num_classes
            transfer = model.transfer(audio, model.prototypes_for(targets))
        finally:
            model.train(was_training)
        for i in range(audio.shape[0]):
            src, dst = self.instruments[int(labels[i])], self.instruments[int(targets[i])]
            clips = {"input": audio[i], "reconstruction": recon[i], f"to_{dst}": transfer[i]}
            for name, wave in clips.items():
                wave = wave.float().cpu().clamp(-1, 1)
                self.writer.add_audio(f"example_{i}_{src}/{name}", wave, step, sample_rate=self.sample_rate)
            image = _spectrogram_png([w.float().cpu().numpy() for w in clips.values()],
                                     [f"{src} input", "reconstruction", f"{src} -> {dst}"], self.sample_rate)
            self.writer.add_image(f"example_{i}_{src}/spectrograms", image, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
