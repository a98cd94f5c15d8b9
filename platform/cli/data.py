"""`audiostyle data`: add an instrument dataset, render the demo instruments, summarise a dataset folder,
regenerate the committed demo statistics.

Only argparse is imported at module level; the data job (platform/data/prepare.py) and its heavy
dependencies load inside the run functions so `audiostyle --help` stays instant.
"""

from __future__ import annotations

import argparse

from audiostyle.platform.cli.argtypes import (
    positive_int,
    positive_minutes,
    positive_number,
    positive_seconds,
    probability,
    unit_fraction,
)

_ADD_EXAMPLES = """examples:
  audiostyle data add cello recordings/cello/                    # every audio file under the folder
  audiostyle data add cello more_takes/                          # appends to data/cello: new files only
  audiostyle data add cello takes.csv --out data/mine/cello      # CSV: path[,recording_id][,split]
  audiostyle data add cello recordings/cello/ --replace          # start data/cello over
  audiostyle data add flute takes.jsonl --segment-seconds 8 --shard-size-mb 512

SOURCE is a folder (searched recursively; wav, flac, ogg, mp3, aiff) or a .csv/.jsonl list whose rows
name `path` (relative to the list), optionally `recording_id` (files sharing one are split together)
and `split` (train, val, test or heldout; fixed instead of drawn). Audio is made mono, resampled,
loudness-normalized, cut into segments with silence dropped, and split by recording with --seed.

Adding to an instrument that already exists appends: files are recognised by their content (sha256),
so re-adding one changes nothing, and earlier recordings keep their split; statistics are updated.
--replace starts the instrument over. Either way the folder changes only once the new shards are
complete (a SOURCE with no usable audio changes nothing), and one `data add` at a time may write
to a folder (a second is told which process holds it). Files that cannot be used are skipped and
listed with the reason (also in manifest.json)."""

_DEMO_EXAMPLES = """examples:
  audiostyle data demo                                   # piano + violin, CI-sized, a few seconds
  audiostyle data demo --instruments piano,violin,cello  # a third class for experiments/three_instruments.yaml
  audiostyle data demo --minutes 30                      # a real local set: 30 min per instrument
  audiostyle data demo --minutes 20 --instruments piano,violin,cello --players timgm6mb,csound --out data/players
                                                         # several players; FluidR3 and MuseScore held out

Renders music21's bundled scores with real SoundFont samples (tinysoundfont), so nothing is downloaded.
Every split is paired: the same pieces on every instrument, split by piece, so a test piece is never
heard in training on any instrument. pairs/ holds them cut into aligned passages (data.pairs in an
experiment trains on them); the test pieces' note lists are under notes/. The instruments are rendered
with TimGM6mb (in the pretty_midi wheel, so the data is the same on every machine), the reference player,
and by the other --players; every other sound set installed (apt-get install fluid-soundfont-gm
musescore-general-soundfont-small csound-soundfont) renders the 'heldout' split, from which the
evaluation's timbre judge learns and whose test pieces are inputs from a player the model never heard."""


_TRANSCRIBE_EXAMPLES = """examples:
  audiostyle data add flute recordings/flute/ --out data/flute
  audiostyle data transcribe-pairs data/flute --with piano,violin --players timgm6mb,csound
                                          # writes data/flute_pairs; in the experiment YAML:
                                          #   data: {pairs: ["${data.root}/pairs", data/flute_pairs]}

Each segment's notes are kept in DIR/.render/notes.jsonl: a re-run renders again without transcribing.
The recordings should be one instrument each, pitched, and mostly clean (Basic Pitch transcribes chords too)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="add instrument datasets, render demo instruments, summarise datasets",
                       description="Add instrument datasets (WebDataset shards + manifest), render the demo "
                                   "instruments, or summarise an instrument folder.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    add = dsub.add_parser("add", help="ingest recordings of one instrument into shards", epilog=_ADD_EXAMPLES,
                          formatter_class=fmt, description="Ingest recordings of one instrument into WebDataset "
                                                           "shards (FLAC + JSON per segment) and a manifest.json.")
    add.add_argument("instrument", metavar="INSTRUMENT", help="class name: lower-case letters, digits, '_'")
    add.add_argument("source", metavar="SOURCE", help="folder of audio files, or a .csv / .jsonl list of them")
    add.add_argument("--out", metavar="INSTRUMENT_DIR",
                     help="the instrument's folder, created if missing (default: data/<INSTRUMENT>)")
    add.add_argument("--replace", action="store_true",
                     help="start the instrument over instead of appending to it (old shards go once the new "
                          "ones are written)")
    add.add_argument("--sample-rate", type=positive_int, default=None,
                     help="resample to this rate (default: 22050, or the existing dataset's)")
    add.add_argument("--segment-seconds", type=positive_seconds, default=None,
                     help="segment length stored in the shards; training crops shorter windows (default: 10, or "
                          "the existing dataset's)")
    add.add_argument("--shard-size-mb", type=positive_number, default=256.0, help="maximum shard size (default: 256)")
    add.add_argument("--split", default="0.8,0.1,0.1", metavar="TRAIN,VAL,TEST",
                     help="fractions of recordings per split (default: 0.8,0.1,0.1)")
    add.add_argument("--seed", type=int, default=0, help="seed of the train/val/test draw (default: 0)")
    add.add_argument("--no-progress", action="store_true", help="no progress bars")
    add.set_defaults(func=run_add)

    demo = dsub.add_parser("demo", help="render demo instruments from SoundFonts (no downloads)",
                           epilog=_DEMO_EXAMPLES, formatter_class=fmt,
                           description="Render demo instruments from SoundFonts and ingest them into shards, "
                                       "with normalization statistics and paired test note lists.")
    demo.add_argument("--out", default="data/demo", metavar="DIR", help="output root (default: data/demo)")
    demo.add_argument("--instruments", default="piano,violin",
                      help="comma-separated General MIDI names, e.g. piano,violin,cello,flute,trumpet,clarinet,"
                           "guitar (default: piano,violin)")
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--minutes", type=positive_minutes,
                      help="minutes of audio per instrument (a real local set: 30-60)")
    size.add_argument("--seconds", type=positive_seconds, help="seconds of audio per instrument (tests use ~40)")
    demo.add_argument("--seed", type=int, default=0, help="seed of piece selection and splits (default: 0)")
    demo.add_argument("--players", default="timgm6mb", metavar="SETS",
                      help="sound sets that play the training data, comma-separated, from timgm6mb (the reference, "
                           "always included), fluidr3, musescore, csound; each plays every train and val piece with "
                           "each program of the instrument's family, and pairs take their input from any of them. "
                           "Every other set installed is held out (default: timgm6mb)")
    demo.add_argument("--chords", type=unit_fraction, default=0.0, metavar="FRACTION",
                      help="fraction of each split's seconds given to chord passages: every voice of a Bach chorale, "
                           "folded by octaves into the range every instrument plays; split with their chorale, so a "
                           "test chorale's melody and chords both stay out of training (default: 0, melodies only)")
    demo.add_argument("--vibrato", type=probability, default=0.0, metavar="CHANCE",
                      help="chance that a player's rendering of a train or val piece on a bowed instrument (violin, "
                           "viola, cello) gives every note a vibrato of its own (4.5-7 Hz, 10-50 cents, each voice of a "
                           "chord swinging on its own, as a string player's do); the reference's renderings, the pairs' "
                           "targets, stay plain. Takes effect with a second set in --players (default: 0)")
    demo.add_argument("--no-heldout", action="store_true", help="do not render the 'heldout' split with the other "
                                                                  "SoundFonts installed")
    demo.add_argument("--soundfont-dir", action="append", default=[], metavar="DIR",
                      help="also look for held-out SoundFonts (FluidR3_GM.sf2, sf_GMbank.sf2) in DIR; repeatable "
                           "(default: only /usr/share/sounds/sf2 and sf3)")
    demo.add_argument("--unpaired", action="store_true",
                      help="draw train and val pieces separately per instrument (no pairs/); the test split "
                           "stays paired")
    demo.add_argument("--export-recordings", metavar="DIR", default=None,
                      help="also copy each instrument's train and val pieces, as the reference player played them, "
                           "into DIR/<instrument>/ as plain audio files (no notes, no pairs, never a test piece): "
                           "a stand-in for a folder of your own recordings, for `data add`")
    demo.set_defaults(func=run_demo)

    tp = dsub.add_parser(
        "transcribe-pairs", help="pairs for an instrument from recordings alone, by transcribing them",
        epilog=_TRANSCRIBE_EXAMPLES, formatter_class=fmt,
        description="Transcribe every train and val segment of an instrument folder (from `data add`) with "
                    "Basic Pitch, play the notes with demo instruments' SoundFont presets, and write the pairs "
                    "(recording, rendering) as a paired dataset. List it beside the demo's pairs in an "
                    "experiment (data.pairs: [${data.root}/pairs, DIR]) and cross-reconstruction trains "
                    "transfer to and from the instrument on its own recordings.")
    tp.add_argument("instrument_dir", metavar="INSTRUMENT_DIR", help="the instrument's folder from `data add`")
    tp.add_argument("--with", dest="partners", default="piano,violin", metavar="INSTRUMENTS",
                    help="demo instruments that play the transcribed notes, comma-separated (default: piano,violin)")
    tp.add_argument("--players", default="timgm6mb", metavar="SETS",
                    help="sound sets that play them, as `data demo --players` (default: timgm6mb)")
    tp.add_argument("--out", metavar="DIR", default=None, help="output folder (default: INSTRUMENT_DIR_pairs)")
    tp.add_argument("--no-progress", action="store_true", help="no progress bars")
    tp.set_defaults(func=run_transcribe_pairs)

    info = dsub.add_parser("info", help="summarise an instrument folder (its manifest.json)",
                           description="Print segments and hours per split, shards and skipped files of an "
                                       "instrument folder, or of every instrument folder under a demo root.")
    info.add_argument("dir", metavar="DIR", help="instrument folder or URL prefix holding manifest.json, or a root")
    info.set_defaults(func=run_info)

    regen = dsub.add_parser("demo-stats", help="regenerate the committed statistics of the demo instruments",
                            description="Render the default demo instruments into a temporary folder and copy "
                                        "their normalization statistics into the package's stats/demo/ (the "
                                        "fallback for instrument folders without a stats.npz). Run it after "
                                        "changing the renderer or the default front end.")
    regen.add_argument("--minutes", type=positive_minutes, default=None, help="minutes of audio per instrument "
                       "(default: the renderer's CI-sized set)")
    regen.add_argument("--out", metavar="DIR", default=None, help="write here instead of stats/demo/")
    regen.set_defaults(func=run_demo_stats)


def _yaml_line(name: str, location: str) -> str:
    return f"  - {{name: {name}, data: \"{location}\"}}"


def run_add(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    from audiostyle.datasets.manifest import summary_lines
    from audiostyle.platform.core.errors import ConfigError
    from audiostyle.platform.core.output_paths import check_output_folder
    from audiostyle.platform.data.prepare import add_instrument_dataset

    try:
        fractions = tuple(float(x) for x in args.split.split(","))
    except ValueError:
        fractions = ()
    if len(fractions) != 3 or not all(math.isfinite(f) and f >= 0 for f in fractions) or sum(fractions) <= 0:
        raise ConfigError(f"--split must be three non-negative numbers train,val,test (not all 0), e.g. 0.8,0.1,0.1; "
                          f"got {args.split!r}")
    out = check_output_folder(args.out or Path("data") / args.instrument)
    result, stats = add_instrument_dataset(args.instrument, args.source, out, sample_rate=args.sample_rate,
                                           segment_seconds=args.segment_seconds,
                                           shard_max_bytes=int(args.shard_size_mb * 1024 * 1024),
                                           split_fractions=fractions, seed=args.seed,
                                           progress=not args.no_progress, replace=args.replace)
    manifest = result.manifest
    if result.changed:
        print(f"{'replaced' if args.replace else 'added to'} {out}/: {len(result.added_recordings)} recording(s), "
              f"{result.added_segments} segments; {len(result.already_present)} file(s) already in the dataset; "
              f"normalization statistics {stats.name} updated")
    else:
        print(f"nothing new for {out}/: all {len(result.already_present)} file(s) are in the dataset already")
    print("\n".join(summary_lines(manifest)))
    print("\nAdd this line under `instruments:` in your experiment YAML:")
    print(_yaml_line(args.instrument, str(out)))
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from audiostyle.datasets.manifest import read_manifest, summary_lines
    from audiostyle.platform.core.output_paths import check_output_folder
    from audiostyle.platform.data.prepare import export_plain_recordings, prepare_demo

    check_output_folder(args.out)
    if args.export_recordings:
        check_output_folder(args.export_recordings, option="--export-recordings")
    names = tuple(n.strip() for n in args.instruments.split(",") if n.strip())
    from audiostyle.datasets.soundfonts import SYSTEM_DIRS

    result = prepare_demo(args.out, names, seconds_per_instrument=args.seconds, minutes=args.minutes, seed=args.seed,
                          heldout_soundfont=not args.no_heldout, paired=not args.unpaired, progress=True,
                          soundfont_dirs=[*SYSTEM_DIRS, *args.soundfont_dir],
                          players=tuple(p.strip() for p in args.players.split(",") if p.strip()), chords=args.chords,
                          vibrato=args.vibrato)
    for name in names:
        print("\n".join(summary_lines(read_manifest(Path(args.out) / name))))
    if result.get("pairs"):
        from audiostyle.datasets.pair_dataset import describe, read_pair_manifest

        print(describe(read_pair_manifest(result["pairs"])))
    if result.get("heldout_skipped"):
        print(f"note: {result['heldout_skipped']}")
    print(f"\nInstruments under {args.out}/; list them in an experiment YAML as:")
    for name in names:
        print(_yaml_line(name, f"${{data.root}}/{name}"))
    print(f"(with data.root: {args.out})" + (f"; train on the pairs with data.pairs: {result['pairs']}"
                                             if result.get("pairs") else ""))
    if args.export_recordings:
        counts = export_plain_recordings(result, args.export_recordings)
        print(f"\nPlain recordings (train and val pieces, no notes, no pairs) under {args.export_recordings}/: "
              + ", ".join(f"{name} {n} files" for name, n in counts.items()))
        for name in counts:
            print(f"  audiostyle data add {name} {args.export_recordings}/{name}")
    return 0


def run_transcribe_pairs(args: argparse.Namespace) -> int:
    from audiostyle.datasets.pair_dataset import describe
    from audiostyle.platform.core.output_paths import check_output_folder
    from audiostyle.platform.data.transcribed_pairs import default_pairs_dir, write_transcribed_pairs

    out = check_output_folder(args.out or default_pairs_dir(args.instrument_dir))
    partners = [p.strip() for p in args.partners.split(",") if p.strip()]
    players = [p.strip() for p in args.players.split(",") if p.strip()]
    manifest = write_transcribed_pairs(args.instrument_dir, partners, out, players=players,
                                       progress=not args.no_progress)
    print(describe(manifest))
    print(f"\nTrain on them beside the demo's pairs: data.pairs: [\"${{data.root}}/pairs\", {out}]")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from audiostyle.datasets.manifest import MANIFEST_NAME, read_manifest, summary_lines
    from audiostyle.platform.core.locations import is_url

    folder = Path(args.dir)
    if not is_url(args.dir) and not (folder / MANIFEST_NAME).exists() and folder.is_dir():
        found = sorted(p.parent for p in folder.glob(f"*/{MANIFEST_NAME}"))
        if found:  # a root such as data/demo: summarise every instrument in it
            for sub in found:
                print("\n".join(summary_lines(read_manifest(sub))))
            return 0
    print("\n".join(summary_lines(read_manifest(args.dir))))
    return 0


def run_demo_stats(args: argparse.Namespace) -> int:
    from audiostyle.platform.data.prepare import regenerate_demo_stats

    for path in regenerate_demo_stats(args.out, minutes=args.minutes):
        print(f"wrote {path}")
    return 0
