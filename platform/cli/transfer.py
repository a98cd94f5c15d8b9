"""`audiostyle transfer BUNDLE --to INSTRUMENT IN...`: transfer audio files to another instrument."""

from __future__ import annotations

import argparse

from audiostyle.platform.cli.argtypes import add_steady_pitch_option, non_negative_seconds, positive_seconds

EPILOG = """examples:
  audiostyle transfer bundles/piano_violin --to violin melody.wav
  audiostyle transfer bundles/piano_violin --to piano recordings/ -o out/ --device cuda
  audiostyle transfer bundles/piano_violin --to violin song.mp3 --reference my_violin.flac
  audiostyle transfer bundles/any_player_flute --reference my_flute.flac song.wav   # out: song.my_flute.wav
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transfer", help="transfer audio files to another instrument with an exported bundle",
        description="Re-play audio files (wav, flac, ogg, mp3; files or folders; any length) on another "
                    "instrument of the bundle. Audio is mixed to mono, resampled to the model rate and "
                    "processed in overlapping chunks joined by a crossfade. Outputs are written as "
                    "<name>.<instrument>.wav in OUT (files found in an input folder keep their path inside it; "
                    "inputs that would still share an output name are refused before anything is written). Prints the real-time factor (processing time / audio "
                    "duration; below 1 is faster than real time).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", metavar="BUNDLE", help="bundle folder from `audiostyle checkpoints export`")
    p.add_argument("inputs", nargs="+", metavar="IN", help="audio files or folders of them")
    p.add_argument("--to", metavar="INSTRUMENT",
                   help="target instrument (one of the bundle's); may be left out with --reference, whose name "
                        "then names the outputs")
    p.add_argument("-o", "--out", default="transferred", metavar="OUT", help="output folder (default: transferred/)")
    p.add_argument("--reference", metavar="CLIP",
                   help="transfer to the style of this clip (an instrument or player of your own) instead of "
                        "the instrument's training-set prototype")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--chunk-seconds", type=positive_seconds, default=None,
                   help="chunk length (default: the training segment length)")
    p.add_argument("--overlap-seconds", type=non_negative_seconds, default=None,
                   help="crossfade length, at most half a chunk (default: 0.5, or half a shorter chunk)")
    p.add_argument("--format", choices=("wav", "flac"), default="wav", help="output format (default: wav)")
    p.add_argument("--no-cache", action="store_true",
                   help="decode without the key/value cache (the research's uncached decoding; slower)")
    add_steady_pitch_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from audiostyle.platform.core.errors import DataError
    from audiostyle.platform.inference.transfer import transfer_files

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DataError(f"--device {args.device}: no CUDA GPU is visible to torch; use --device cpu")
    written = transfer_files(args.bundle, args.inputs, args.to, out_dir=args.out, reference=args.reference,
                             device=args.device, chunk_seconds=args.chunk_seconds,
                             overlap_seconds=args.overlap_seconds, use_cache=not args.no_cache,
                             out_format=args.format, steady=args.steady_pitch)
    print(f"{len(written)} file(s) written to {args.out}")
    return 0
