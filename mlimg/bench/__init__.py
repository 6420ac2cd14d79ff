"""`mlimg bench`: rate-distortion and speed of every mlimg method against JPEG, WebP, AVIF, JPEG 2000, JPEG XL.

    mlimg bench [--images DIR] [--methods kmeans,pca,...] [--anchors jpeg,webp,...]
                [--qualities 10,50,90] [--method-qualities 1,50,100] [--jobs N] [--out DIR] [--published DIR] [--quick]

Outputs under --out: one CompressAI-layout JSON per codec, rows.csv (every
per-image measurement), summary.md (printed at the end) and rd_psnr.png /
rd_msssim.png. Modules: images (test images), subjects (codecs under test),
measure + runner (the measurements), aggregate, published, report, plots, suite.

This module is imported by the CLI and stays light: the heavy parts load in run().
"""
from __future__ import annotations

import argparse
import sys


def _names(text: str) -> list[str]:
    """Comma-separated names; 'none' or '' means an empty list."""
    if text.strip().lower() in ("", "none"):
        return []
    return [t.strip() for t in text.split(",") if t.strip()]


def _qualities(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or any(not 1 <= q <= 100 for q in values):
        raise argparse.ArgumentTypeError(f"wants integers 1..100 separated by commas, got {text!r}")
    return values


def _window(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--auc-range wants LO,HI in bpp, e.g. 0.25,1.0; got {text!r}")
    if not 0 <= lo < hi:
        raise argparse.ArgumentTypeError(f"--auc-range wants 0 <= LO < HI, got {text!r}")
    return lo, hi


def _command_from_argv() -> str:
    argv = sys.argv[1:]
    if argv[:1] == ["bench"]:
        argv = argv[1:]
    return " ".join(["mlimg bench", *argv])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", metavar="DIR",
                        help="folder of test images (default: ../shared/data/kodak if it exists, "
                             "else a built-in synthetic set; 'builtin' forces the latter)")
    parser.add_argument("--methods", type=_names, metavar="LIST",
                        help="comma-separated mlimg methods (default: every registered method; 'none' for anchors only)")
    parser.add_argument("--anchors", type=_names, metavar="LIST",
                        help="comma-separated anchors: jpeg,webp,avif,jpeg2000,jxl,png-palette,png,webp-lossless,"
                             "jxl-lossless (default: the first five plus those the methods need; 'none' for none)")
    parser.add_argument("--qualities", type=_qualities, metavar="Q,Q,...",
                        help="quality values used as rate points by every codec with a quality setting "
                             "(default: each codec's own sweep)")
    parser.add_argument("--method-qualities", type=_qualities, metavar="Q,Q,...",
                        help="quality values for the mlimg methods only, the anchors keeping their own sweeps "
                             "(e.g. fewer points for a slow encoder setting); overrides --qualities for methods")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="parallel worker processes (default 1; timings are cleaner with 1)")
    parser.add_argument("--out", default="bench-out", metavar="DIR", help="output folder (default ./bench-out)")
    parser.add_argument("--published", metavar="DIR",
                        help="folder of published CompressAI-format Kodak results (default ../shared/anchors/kodak)")
    parser.add_argument("--quick", action="store_true",
                        help="4 images and 4 rate points per codec (about 6 minutes with every method on 2 cores)")
    parser.add_argument("--limit", type=int, metavar="N", help="use only the first N images")
    parser.add_argument("--bd", choices=("cubic", "pchip"), default="cubic",
                        help="Bjøntegaard fit: classic cubic (default) or piecewise cubic (pchip)")
    parser.add_argument("--auc-range", type=_window, default=(0.25, 1.0), metavar="LO,HI",
                        help="bpp window of the RD-curve AUC (default 0.25,1.0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--reports", action=argparse.BooleanOptionalAction, default=None,
                        help="include the methods' own report sections, e.g. vq's initialisation ablation "
                             "(default: yes, except with --quick)")


def run(args: argparse.Namespace) -> int:
    from .suite import Settings
    from .suite import run as run_suite

    if args.jobs < 1:
        print("mlimg bench: --jobs must be at least 1", file=sys.stderr)
        return 2
    settings = Settings(
        images=args.images,
        methods=args.methods,
        anchors=args.anchors,
        qualities=args.qualities,
        method_qualities=args.method_qualities,
        jobs=args.jobs,
        out=args.out,
        published=args.published,
        quick=args.quick,
        limit=args.limit,
        bd_mode=args.bd,
        auc_window=args.auc_range,
        progress=not args.no_progress,
        plots=not args.no_plots,
        reports=(not args.quick) if args.reports is None else args.reports,
        command=getattr(args, "command_line", None) or _command_from_argv(),
    )
    try:
        result = run_suite(settings)
    except ValueError as exc:
        print(f"mlimg bench: {exc}", file=sys.stderr)
        return 2
    print(result.summary)
    print(f"\nwrote {len(result.files)} files to {settings.out}/", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (python -m mlimg.bench) for when the mlimg CLI is not wired yet."""
    parser = argparse.ArgumentParser(prog="mlimg bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    if argv is not None:
        args.command_line = " ".join(["mlimg bench", *argv])
    return run(args)
