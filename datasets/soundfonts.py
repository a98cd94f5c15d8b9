"""SoundFonts for the demo instruments: where they are, which one trains and which are held out, which
General MIDI program plays each instrument and in which range, and turning a monophonic note list into
mono audio with tinysoundfont.

TimGM6mb ships inside the pretty_midi wheel, so it is on every machine: the demo always trains on it, and
the same `data demo` command gives the same shards everywhere (CI included). Any other SoundFont found
(Debian's `fluid-soundfont-gm` and `csound-soundfont`) is held out: its renderings train the evaluation's
timbre judge, which then never hears the sample set the model learned from.
tinysoundfont renders bit-identical audio for the same input (the reason it is the renderer here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audiostyle.platform.core.errors import ConfigError, DataError, did_you_mean


@dataclass(frozen=True)
class InstrumentSpec:
    """A demo instrument: its General MIDI program and the (sounding) MIDI range melodies are fitted into."""

    name: str
    program: int
    low: int
    high: int


# Comfortable sounding ranges (MIDI numbers), narrower than the extremes so octave-shifted melodies sit
# where the instrument's samples sound typical. Programs are 0-based GM numbers; every one of them
# exists in TimGM6mb, FluidR3_GM and MuseScore_General (checked with sfpreset_name).
INSTRUMENTS: dict[str, InstrumentSpec] = {
    spec.name: spec
    for spec in (
        InstrumentSpec("piano", 0, 36, 96),
        InstrumentSpec("harpsichord", 6, 41, 89),
        InstrumentSpec("vibraphone", 11, 53, 89),
        InstrumentSpec("guitar", 24, 40, 83),  # nylon-string; sounds an octave below written
        InstrumentSpec("violin", 40, 55, 96),
        InstrumentSpec("viola", 41, 48, 84),
        InstrumentSpec("cello", 42, 36, 76),
        InstrumentSpec("harp", 46, 36, 96),
        InstrumentSpec("trumpet", 56, 55, 82),
        InstrumentSpec("french_horn", 60, 41, 77),
        InstrumentSpec("alto_sax", 65, 49, 81),
        InstrumentSpec("oboe", 68, 58, 91),
        InstrumentSpec("clarinet", 71, 50, 89),
        InstrumentSpec("flute", 73, 60, 96),
    )
}


def instrument_spec(name: str) -> InstrumentSpec:
    """The table entry for `name`; a ConfigError naming it and listing the known instruments otherwise."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key in INSTRUMENTS:
        return INSTRUMENTS[key]
    known = ", ".join(sorted(INSTRUMENTS))
    raise ConfigError(
        f"unknown demo instrument {name!r}.{did_you_mean(key, INSTRUMENTS)} Known instruments: {known}",
        path="instruments",
        hint="pick one of the known names, or add a row (name, General MIDI program, range) to "
        "INSTRUMENTS in datasets/soundfonts.py",
    )


def paired_range() -> tuple[int, int]:
    """The MIDI range every instrument in the table plays (60-76 today): paired test pieces are fitted
    into it so that every instrument plays the very same pitches, whichever instruments are rendered."""
    low = max(spec.low for spec in INSTRUMENTS.values())
    high = min(spec.high for spec in INSTRUMENTS.values())
    return low, high


@dataclass(frozen=True)
class SoundFont:
    """A SoundFont file found on this machine; `name` is a short, filename-safe tag."""

    name: str
    path: Path


SYSTEM_DIRS = (Path("/usr/share/sounds/sf2"), Path("/usr/share/sounds/sf3"))
TRAINING_SOUNDFONT = "timgm6mb"
# Held-out SoundFonts by tag and file name pattern. MuseScore_General is left out on purpose: rendered by
# tinysoundfont, its grand piano sounds two octaves below the notes (spectral centroid 286 Hz against
# 880-1,640 Hz for the other banks, measured on the same chorale), and a judge trained on it learns a
# wrong piano.
_SYSTEM_PATTERNS = (("fluidr3", "FluidR3_GM.sf2"), ("csound", "sf_GMbank.sf2"))


def timgm_path() -> Path:
    """TimGM6mb.sf2 inside the installed pretty_midi package (6 MB, GPL-2 sample data)."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise DataError(f"{path}: TimGM6mb.sf2 is missing from the pretty_midi package; reinstall it with "
                        "`pip install --force-reinstall pretty_midi`")
    return path


def find_soundfonts(search_dirs: Iterable[str | os.PathLike] | None = None) -> list[SoundFont]:
    """SoundFonts present here: TimGM6mb first (always), then the held-out ones found (FluidR3, csound).

    `search_dirs` defaults to /usr/share/sounds/sf2 and sf3 (where the Debian packages put them). A
    dangling link (a package removed) is not a SoundFont.
    """
    dirs = [Path(d) for d in (search_dirs if search_dirs is not None else SYSTEM_DIRS)]
    found = [SoundFont(TRAINING_SOUNDFONT, timgm_path())]
    for tag, pattern in _SYSTEM_PATTERNS:
        matches = sorted(p for d in dirs if d.is_dir() for p in d.glob(pattern) if p.is_file())
        if matches:
            found.append(SoundFont(tag, matches[0]))
    return found


def choose_soundfonts(available: Sequence[SoundFont]) -> tuple[SoundFont, list[SoundFont]]:
    """(the training SoundFont, the held-out ones): TimGM6mb trains, every other one is held out."""
    training = next((sf for sf in available if sf.name == TRAINING_SOUNDFONT), None)
    if training is None:
        raise DataError("TimGM6mb.sf2 was not found; it should come with pretty_midi "
                        "(`pip install --force-reinstall pretty_midi`)")
    return training, [sf for sf in available if sf is not training]


class NoteRenderer:
    """Renders monophonic note lists with one SoundFont, loaded once (MuseScore sf3 takes seconds to load)."""

    def __init__(self, soundfont: SoundFont, sample_rate: int):
        try:
            import tinysoundfont
        except ModuleNotFoundError:
            # not a pyproject dependency: it declares PyAudio (no Linux wheel), which rendering never uses
            raise DataError("rendering demo instruments needs tinysoundfont: "
                            "`python3 -m pip install --no-deps tinysoundfont`") from None

        self.soundfont = soundfont
        self.sample_rate = int(sample_rate)
        self._synth = tinysoundfont.Synth(samplerate=self.sample_rate)
        try:
            self._sfid = self._synth.sfload(str(soundfont.path))
        except Exception as exc:  # tinysoundfont raises a bare Exception on unreadable files
            raise DataError(f"{soundfont.path}: cannot load this SoundFont ({exc}); remove it or reinstall its package") from exc

    def render(self, program: int, notes: Sequence[dict], *, tail_seconds: float = 1.0, peak: float = 0.9) -> np.ndarray:
        """Mono float32 audio of `notes` (dicts with onset, offset seconds, pitch, velocity) on `program`.

        The synth is silenced and flushed after each call, so a rendering does not depend on the ones
        before it (bit-identical output for the same notes). The result is scaled to `peak` so PCM_16 FLAC
        neither clips nor wastes bits.
        """
        synth = self._synth
        synth.program_select(0, self._sfid, 0, int(program))
        sr = self.sample_rate
        events: list[tuple[int, int, int, int]] = []
        for note in notes:
            start = int(round(float(note["onset"]) * sr))
            stop = max(start + 1, int(round(float(note["offset"]) * sr)))
            # kind 0 (off) sorts before kind 1 (on) at the same sample, so a repeated pitch re-attacks.
            events.append((start, 1, int(note["pitch"]), int(note["velocity"])))
            events.append((stop, 0, int(note["pitch"]), 0))
        events.sort()
        total = (events[-1][0] if events else 0) + int(round(tail_seconds * sr))
        stereo = np.zeros((total, 2), dtype=np.float32)
        pos = 0
        for sample, kind, pitch, velocity in [*events, (total, -1, 0, 0)]:
            if sample > pos:
                block = synth.generate_simple(sample - pos)
                stereo[pos:sample] = np.frombuffer(block, dtype=np.float32).reshape(-1, 2)
                pos = sample
            if kind == 1:
                synth.noteon(0, pitch, velocity)
            elif kind == 0:
                synth.noteoff(0, pitch)
        synth.sounds_off()
        # "Sounds off" fades voices out over a few ms rather than cutting them; render that fade away so
        # the next call starts from silence.
        synth.generate_simple(int(0.1 * sr))
        mono = stereo.mean(axis=1)
        top = float(np.abs(mono).max()) if mono.size else 0.0
        if top > 0:
            mono *= np.float32(peak / top)
        return mono
