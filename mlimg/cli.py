"""The `mlimg` command line: info, encode, decode, methods, plus subcommands from other modules.

Exit codes: 0 success, 1 bad input file, 2 usage error (bad arguments or options).
Expected errors print one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from typing import Any, Sequence

# Subcommands provided by other modules exposing add_arguments(parser) and run(args) -> int.
# They are imported only when chosen, so `mlimg info` never pays for torch.
EXTERNAL_COMMANDS = {
    "bench": ("mlimg.bench", "rate-distortion benchmark against the anchors"),
    "train": ("mlimg.train", "train a learned method's weights"),
    "conformance": ("mlimg.conformance", "check this implementation against fixtures/"),
}

EXIT_OK, EXIT_BAD_FILE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line arguments (exit code 2)."""


def parse_value(text: str) -> Any:
    """'3' -> 3, '0.5' -> 0.5, 'true'/'false' -> bool, 'none' -> None, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"option {pair!r} must look like key=value")
        out[key.strip()] = parse_value(value.strip())
    return out


# ---------------------------------------------------------------- info


def describe_file(path: str) -> dict[str, Any]:
    """Everything `mlimg info` prints, as a dict, without decoding pixels.

    Container errors (bad signature, CRC, framing) raise; problems only a decoder of the
    method would have (unknown method, unknown critical chunk, missing MODL) are reported
    under "problem" so the header and chunk list can still be shown.
    """
    from . import container, plugin

    with open(path, "rb") as fp:
        data = fp.read()
    try:
        parsed = container.parse(data, allow_truncated=True)
    except SyntaxError as exc:
        raise SyntaxError(f"{path}: {exc}") from None
    header = parsed.header
    facts: dict[str, Any] = {
        "file": path,
        "format_version": header.version_string,
        "width": header.width,
        "height": header.height,
        "mode": header.mode,
        "method": header.method,
        "method_version": header.method_version,
        "chunks": [{"type": "MHDR", "length": len(container.build_header_payload(header))}]
        + [{"type": c.type, "length": len(c.data)} for c in parsed.chunks]
        + ([] if parsed.truncated else [{"type": "MEND", "length": 0}]),
        "bytes": len(data),
        "bpp": 8 * len(data) / (header.width * header.height),
    }
    if parsed.truncated:
        facts["truncated"] = parsed.truncated
    try:
        codec = plugin.codec_for(header)
        roles = plugin.sort_chunks(header, parsed.chunks, codec)
    except OSError as exc:
        facts["problem"] = str(exc)
        return facts
    for key, value in roles.metadata.items():
        facts[key + "_bytes"] = len(value)
    if roles.model is not None:
        facts["model_id"], facts["model_sha256"] = roles.model[0], roles.model[1].hex()
    if roles.skipped:
        facts["skipped_chunks"] = roles.skipped
    try:
        method_facts = codec.describe(plugin.to_codec_header(header), roles.codec_chunks)
    except Exception as exc:  # noqa: BLE001 - a codec's describe() failing on corrupt chunks
        method_facts, facts["problem"] = {}, f"method {header.method!r}: {type(exc).__name__}: {exc}"
    facts["method_facts"] = {k: v for k, v in method_facts.items() if _jsonable(v)}
    return facts


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _print_info(facts: dict[str, Any]) -> None:
    print(f"{facts['file']}: mlimg {facts['format_version']}, {facts['width']}x{facts['height']} {facts['mode']}")
    print(f"  method:  {facts['method']} (version {facts['method_version']})")
    if "model_id" in facts:
        print(f"  model:   {facts['model_id']} (sha256 {facts['model_sha256']})")
    print(f"  size:    {facts['bytes']} bytes, {facts['bpp']:.4f} bpp")
    for key in ("exif_bytes", "icc_profile_bytes", "xmp_bytes"):
        if key in facts:
            print(f"  {key[:-6]}: {facts[key]} bytes")
    print("  chunks:")
    for chunk in facts["chunks"]:
        print(f"    {chunk['type']}  {chunk['length']:>10} bytes")
    for key, value in facts.get("method_facts", {}).items():
        print(f"  {key}: {value}")
    for key in ("skipped_chunks", "truncated", "problem"):
        if key in facts:
            print(f"  {key.replace('_', ' ')}: {facts[key]}")


def cmd_info(args) -> int:
    """Describe each file; exit 1 if any could not be decoded (truncated, unknown method, ...)."""
    status = EXIT_OK
    for path in args.files:
        facts = describe_file(path)
        if args.json:
            print(json.dumps(facts))
        else:
            _print_info(facts)
        if "problem" in facts or "truncated" in facts:
            status = EXIT_BAD_FILE
    return status


# ---------------------------------------------------------------- encode / decode


def cmd_encode(args) -> int:
    from PIL import Image

    import mlimg  # noqa: F401

    options = parse_options(args.option)
    if args.quality is not None:
        options["quality"] = args.quality
    if args.target_bpp is not None:
        options["target_bpp"] = args.target_bpp
    if args.max_bytes is not None:
        options["max_bytes"] = args.max_bytes
    with Image.open(args.input) as im:
        im.load()
        try:
            im.save(args.output, format="MLIMG", method=args.method, **options)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        summary = im.info.get("mlimg_save", {})
    extra = "".join(f", {k} {v}" for k, v in summary.items() if k in ("quality", "rate_note"))
    print(f"wrote {args.output}: {summary.get('bytes')} bytes, {summary.get('bpp', 0):.4f} bpp, method {args.method}{extra}")
    return EXIT_OK


def cmd_decode(args) -> int:
    from PIL import Image

    import mlimg  # noqa: F401

    with Image.open(args.input, formats=["MLIMG"]) as im:
        im.decode_options = parse_options(args.option)
        if args.iterations is not None:  # progressive methods (rnn): decode only the first N
            im.decode_options["iterations"] = args.iterations
        if args.realism is not None:  # generative methods (gan): 0 closest to the original, 1 most realistic
            im.decode_options["realism"] = args.realism
        try:
            im.load()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        im.save(args.output)
    print(f"wrote {args.output}: {im.width}x{im.height} {im.mode}")
    return EXIT_OK


def cmd_methods(args) -> int:
    from . import codecs
    from .plugin import accepted_decode_options

    for name in codecs.names():
        try:
            codec = codecs.get(name)
        except ImportError as exc:  # a registered method whose module is broken or not installed
            print(f"{name} (unavailable: {exc})")
            continue
        kind = "lossless" if codec.lossless else "lossy"
        model = ", learned (needs weights)" if codec.needs_model else ""
        print(f"{name} (version {codec.version}, {kind}{model}) modes: {', '.join(codec.modes)}")
        for key, opt in codec.options.items():
            print(f"    {key}={opt.default!r}  valid: {opt.valid}")
        if not codec.lossless:
            print(f"    loop_filter={codec.loop_filter_default!r}  valid: 'auto', True, False (container fLTR chunk)")
        decode_keys = [k for k in accepted_decode_options(codec) or [] if k not in ("model", "truncated")]
        if decode_keys:
            print(f"    decode options (im.decode_options): {', '.join(decode_keys)}")
    return EXIT_OK


# ---------------------------------------------------------------- parser and main


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; an external subcommand's module is imported only if it is `chosen`."""
    parser = argparse.ArgumentParser(prog="mlimg", description="The .mlimg image format: tools.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"mlimg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("info", help="describe .mlimg files without decoding pixels")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("encode", help="encode any image Pillow reads into .mlimg")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--method", "-m", default=_default_method(), help="compression method (see `mlimg methods`)")
    p.add_argument("--quality", "-q", type=int, help="1..100, higher is better quality and more bytes")
    p.add_argument("--target-bpp", type=float, help="choose the quality that fits this many bits per pixel")
    p.add_argument("--max-bytes", type=int, help="choose the quality whose file fits this many bytes")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode .mlimg into any format Pillow writes (by extension)")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--option", "-o", action="append", metavar="KEY=VALUE", help="decode option (repeatable)")
    p.add_argument("--iterations", type=int, metavar="N", help="progressive methods (rnn): decode only the first N iterations")
    p.add_argument("--realism", type=float, metavar="R",
                   help="generative methods (gan): 0 (closest to the original) .. 1 (most realistic, default)")
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("methods", help="list methods, their modes and options")
    p.set_defaults(func=cmd_methods)

    for name, (module_name, help_text) in EXTERNAL_COMMANDS.items():
        if importlib.util.find_spec(module_name) is None:
            continue  # that engineer's module has not landed yet
        p = sub.add_parser(name, help=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=module.run)
    return parser


def _bomb_error() -> type[Exception]:
    from PIL import Image

    return Image.DecompressionBombError


def _default_method() -> str:
    from .plugin import DEFAULT_METHOD

    return DEFAULT_METHOD


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(chosen)
    args = parser.parse_args(argv)  # exits with 2 on usage errors
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed early
        return EXIT_OK
    except UsageError as exc:
        print(f"mlimg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, SyntaxError, _bomb_error()) as exc:  # UnidentifiedImageError, FileNotFoundError: OSError
        print(f"mlimg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_FILE
    except ValueError as exc:
        print(f"mlimg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
