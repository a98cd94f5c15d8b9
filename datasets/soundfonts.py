"""SoundFonts for the demo instruments: where they are, which ones play in training (the players) and
which are held out, which General MIDI programs play each instrument and in which range, and turning a
note list into mono audio with tinysoundfont.

TimGM6mb ships inside the pretty_midi wheel, so it is on every machine: it is the reference player (the
sound every transfer aims at, and the test split's), and the same `data demo` command gives the same
shards everywhere (CI included). The project's other training and demo sets are Debian's FluidR3
(`fluid-soundfont-gm`), MuseScore General (`musescore-general-soundfont-small`) and the csound GM bank
(`csound-soundfont`); no other SoundFont is ever used here (others are kept for independent testing).
Sets named as players render the training data beside TimGM6mb; every other set found is held out: its
renderings train the evaluation's timbre judge and give inputs from a player the model never heard.
Sample sharing to keep in mind when choosing what to hold out: MuseScore General's strings are FluidR3's
samples, and csound's strings are TimGM6mb's (same peaks, note for note).
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
    # Other programs of the same instrument family that players use (a bright or electric grand beside the
    # grand piano; the fiddle, a viola and a string section beside the violin): more players per instrument,
    # as SS-VQ-VAE and Slakh do. They play pairs' inputs only; targets stay the main program.
    family: tuple[int, ...] = ()
    # Played with a vibrato of each note's own (bowed strings): `data demo --vibrato` may give players'
    # renderings one (NoteRenderer.render's `vibrato`).
    vibrato: bool = False

    @property
    def programs(self) -> tuple[int, ...]:
        """The main program first, then the family's others."""
        return (self.program, *(p for p in self.family if p != self.program))


# Comfortable sounding ranges (MIDI numbers), narrower than the extremes so octave-shifted melodies sit
# where the instrument's samples sound typical. Programs are 0-based GM numbers; every one of them
# exists in TimGM6mb, FluidR3_GM and MuseScore_General (checked with sfpreset_name).
INSTRUMENTS: dict[str, InstrumentSpec] = {
    spec.name: spec
    for spec in (
        InstrumentSpec("piano", 0, 36, 96, family=(1, 2)),
        InstrumentSpec("harpsichord", 6, 41, 89),
        InstrumentSpec("vibraphone", 11, 53, 89),
        InstrumentSpec("guitar", 24, 40, 83),  # nylon-string; sounds an octave below written
        InstrumentSpec("violin", 40, 55, 96, family=(110, 41, 48), vibrato=True),  # fiddle, viola, string ensemble
        InstrumentSpec("viola", 41, 48, 84, vibrato=True),
        InstrumentSpec("cello", 42, 36, 76, family=(43, 41, 48), vibrato=True),  # contrabass, viola, string ensemble
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
TRAINING_SOUNDFONT = "timgm6mb"  # the reference player: always present, always trains
# The other sets by tag, file name and the Debian package that installs it. MuseScore General's grand
# piano renders at the right pitch (C4 261.8 Hz with tinysoundfont); its low spectral centroid is a darker
# piano (Steinway D samples), not a wrong octave.
_SYSTEM_PATTERNS = (("fluidr3", "FluidR3_GM.sf2", "fluid-soundfont-gm"),
                    ("musescore", "MuseScore_General.sf3", "musescore-general-soundfont-small"),
                    ("csound", "sf_GMbank.sf2", "csound-soundfont"))
SOUND_SETS = (TRAINING_SOUNDFONT, *(tag for tag, _, _ in _SYSTEM_PATTERNS))


def timgm_path() -> Path:
    """TimGM6mb.sf2 inside the installed pretty_midi package (6 MB, GPL-2 sample data)."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise DataError(f"{path}: TimGM6mb.sf2 is missing from the pretty_midi package; reinstall it with "
                        "`pip install --force-reinstall pretty_midi`")
    return path


def find_soundfonts(search_dirs: Iterable[str | os.PathLike] | None = None) -> list[SoundFont]:
    """SoundFonts present here: TimGM6mb first (always), then the others found (FluidR3, MuseScore, csound).

    `search_dirs` defaults to /usr/share/sounds/sf2 and sf3 (where the Debian packages put them). A
    dangling link (a package removed) is not a SoundFont.
    """
    dirs = [Path(d) for d in (search_dirs if search_dirs is not None else SYSTEM_DIRS)]
    found = [SoundFont(TRAINING_SOUNDFONT, timgm_path())]
    for tag, pattern, _ in _SYSTEM_PATTERNS:
        matches = sorted(p for d in dirs if d.is_dir() for p in d.glob(pattern) if p.is_file())
        if matches:
            found.append(SoundFont(tag, matches[0]))
    return found


def choose_soundfonts(available: Sequence[SoundFont], players: Sequence[str] = (TRAINING_SOUNDFONT,)
                      ) -> tuple[list[SoundFont], list[SoundFont]]:
    """(the players, the held-out sets): TimGM6mb and the sets named in `players` train (TimGM6mb first:
    the reference), every other set found is held out. A named set that is not installed is a DataError
    that names its Debian package."""
    by_name = {sf.name: sf for sf in available}
    if TRAINING_SOUNDFONT not in by_name:
        raise DataError("TimGM6mb.sf2 was not found; it should come with pretty_midi "
                        "(`pip install --force-reinstall pretty_midi`)")
    wanted = [TRAINING_SOUNDFONT, *(p for p in dict.fromkeys(players) if p != TRAINING_SOUNDFONT)]
    unknown = [p for p in wanted if p not in SOUND_SETS]
    if unknown:
        raise ConfigError(f"unknown sound set {unknown[0]!r}.{did_you_mean(unknown[0], SOUND_SETS)} The project's "
                          f"sound sets: {', '.join(SOUND_SETS)}", path="players")
    packages = {tag: package for tag, _, package in _SYSTEM_PATTERNS}
    missing = [p for p in wanted if p not in by_name]
    if missing:
        raise DataError(f"sound set(s) {', '.join(missing)} not installed: `apt-get install "
                        f"{' '.join(packages[m] for m in missing)}` (or drop them from --players)")
    chosen = [by_name[p] for p in wanted]
    return chosen, [sf for sf in available if sf not in chosen]


class NoteRenderer:
    """Renders note lists (melodies or chords) with one SoundFont, loaded once (MuseScore sf3 loads for seconds)."""

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

    def render(self, program: int, notes: Sequence[dict], *, tail_seconds: float = 1.0, peak: float = 0.9,
               vibrato: np.random.Generator | None = None) -> np.ndarray:
        """Mono float32 audio of `notes` (dicts with onset, offset seconds, pitch, velocity) on `program`.

        With `vibrato` (a generator), every note sounds on a MIDI channel of its own with a pitch-bend
        vibrato drawn for it (VIBRATO_RATE_HZ, VIBRATO_CENTS, a random phase), so the voices of a chord
        swing independently, as a string player's do; without it, one channel and no bend. The synth is
        silenced and flushed after each call, so a rendering does not depend on the ones before it
        (bit-identical output for the same notes and generator state). The result is scaled to `peak` so
        PCM_16 FLAC neither clips nor wastes bits.
        """
        synth = self._synth
        sr = self.sample_rate
        channels = _assign_channels(notes) if vibrato is not None else [0] * len(notes)
        for channel in sorted(set(channels)):
            synth.program_select(channel, self._sfid, 0, int(program))
            if vibrato is not None:
                synth.pitchbend_range(channel, _BEND_RANGE)
        bends: dict[int, tuple[float, ...]] = {}  # channel -> (onset s, rate Hz, cents, phase) of its last note
        events: list[tuple] = []
        for note, channel in zip(notes, channels, strict=True):
            start = int(round(float(note["onset"]) * sr))
            stop = max(start + 1, int(round(float(note["offset"]) * sr)))
            swing = ((start / sr, float(vibrato.uniform(*VIBRATO_RATE_HZ)), float(vibrato.uniform(*VIBRATO_CENTS)),
                      float(vibrato.uniform(0.0, 2 * np.pi))) if vibrato is not None else ())
            # kind 0 (off) sorts before kind 1 (on) at the same sample, so a repeated pitch re-attacks.
            events.append((start, 1, int(note["pitch"]), int(note["velocity"]), channel, swing))
            events.append((stop, 0, int(note["pitch"]), 0, channel, ()))
        events.sort()
        total = (events[-1][0] if events else 0) + int(round(tail_seconds * sr))
        stereo = np.zeros((total, 2), dtype=np.float32)
        pos = 0
        for sample, kind, pitch, velocity, channel, swing in [*events, (total, -1, 0, 0, 0, ())]:
            while sample > pos:
                # With vibrato the bends move every block; without, one block to the next event.
                end = min(sample, pos + _BEND_BLOCK) if bends else sample
                for ch, (onset, rate, cents, phase) in bends.items():
                    bend = cents * np.sin(2 * np.pi * rate * (pos / sr - onset) + phase)
                    synth.pitchbend(ch, int(np.clip(8192 + bend / (100 * _BEND_RANGE) * 8192, 0, 16383)))
                block = synth.generate_simple(end - pos)
                stereo[pos:end] = np.frombuffer(block, dtype=np.float32).reshape(-1, 2)
                pos = end
            if kind == 1:
                if swing:
                    bends[channel] = swing
                synth.noteon(channel, pitch, velocity)
            elif kind == 0:
                synth.noteoff(channel, pitch)
        synth.sounds_off()
        # "Sounds off" fades voices out over a few ms rather than cutting them; render that fade away so
        # the next call starts from silence, with every channel's bend back at rest.
        synth.generate_simple(int(0.1 * sr))
        for channel in bends:
            synth.pitchbend(channel, 8192)
        mono = stereo.mean(axis=1)
        top = float(np.abs(mono).max()) if mono.size else 0.0
        if top > 0:
            mono *= np.float32(peak / top)
        return mono


# A string player's vibrato, drawn per note: a few Hz, tens of cents. FluidR3's violin, which no model
# here trains on, swings each voice of a chord on its own; the training sets' violins do not swing.
VIBRATO_RATE_HZ = (4.5, 7.0)
VIBRATO_CENTS = (10.0, 50.0)
_BEND_RANGE = 2.0  # semitones either way: the GM default, far more than a vibrato needs
_BEND_BLOCK = 256  # samples between bend updates: 86 per second at 22.05 kHz, smooth at 7 Hz
_CHANNELS = tuple(c for c in range(16) if c != 9)  # channel 10 (index 9) is General MIDI's drum kit


def _assign_channels(notes: Sequence[dict]) -> list[int]:
    """A channel per note, no two sounding notes sharing one, each reused as late as possible (its last
    note's release rings on under the bend it had)."""
    free_at = {c: -np.inf for c in _CHANNELS}
    channels = []
    for note in notes:
        onset = float(note["onset"])
        ready = [c for c in _CHANNELS if free_at[c] <= onset]
        if not ready:
            raise DataError(f"more than {len(_CHANNELS)} notes sound at {onset:.2f} s; a vibrato rendering gives "
                            "each its own MIDI channel")
        channel = min(ready, key=lambda c: free_at[c])
        free_at[channel] = float(note["offset"])
        channels.append(channel)
    return channels
