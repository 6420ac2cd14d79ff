"""Byte surgery for the invalid/ and compat/ conformance fixtures.

Every file here is assembled from parts with its own tiny framing code
(struct + zlib.crc32, straight from spec/MLIMG.md), independent of
mlimg.container, so the fixtures also cross-check the container module.
CRCs are recomputed wherever the defect is not the CRC itself.

INVALID lists (name, what is wrong, file bytes, error class, message fragment);
COMPAT lists (name, what is unusual, file bytes) for files that must decode
exactly like their plain counterpart.
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from .fixture_images import synth_pixels

SIGNATURE = b"\x8bMLI\r\n\x1a\n"
MODE_CODES = {"L": 1, "RGB": 2, "RGBA": 3, "I;16": 4}

# The base image every defect is cut from: small, RGB, method raw.
BASE_W, BASE_H, BASE_MODE, BASE_SEED = 5, 4, "RGB", 9001

EXIF = (  # a minimal little-endian TIFF: one IFD entry, ImageDescription = "mlimg"
    b"II*\x00\x08\x00\x00\x00\x01\x00\x0e\x01\x02\x00\x06\x00\x00\x00\x1a\x00\x00\x00\x00\x00\x00\x00mlimg\x00"
)
ICC = b"\x00\x00\x00\x80mlimacsp" + bytes(range(116))  # opaque to the container: copied, never parsed
XMP = (
    b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b"<rdf:RDF/></x:xmpmeta><?xpacket end=\"r\"?>"
)


def mhdr(width=BASE_W, height=BASE_H, mode=MODE_CODES[BASE_MODE], *, major=1, minor=0,
         method=b"raw", method_version=1, extension=b"") -> bytes:
    """An MHDR payload with any field value, valid or not."""
    return struct.pack(">BBIIBH", major, minor, width, height, mode, method_version) + bytes([len(method)]) + method + extension


def frame(chunk_type: bytes, payload: bytes, *, length: int | None = None, crc: int | None = None) -> bytes:
    """length | type | payload | CRC-32(type + payload); length and crc can be forced wrong."""
    length = len(payload) if length is None else length
    crc = zlib.crc32(chunk_type + payload) if crc is None else crc
    return struct.pack(">I", length) + chunk_type + payload + struct.pack(">I", crc)


def end() -> bytes:
    return frame(b"MEND", b"")


def base_pixels() -> np.ndarray:
    return synth_pixels(BASE_MODE, BASE_W, BASE_H, BASE_SEED)


def raw_file(*middle: bytes, header: bytes | None = None, pixels: bytes | None = None) -> bytes:
    """signature + MHDR + middle chunks + RAWD + MEND for the base image."""
    header = mhdr() if header is None else header
    pixels = base_pixels().tobytes() if pixels is None else pixels
    return SIGNATURE + frame(b"MHDR", header) + b"".join(middle) + frame(b"RAWD", pixels) + end()


def _flip_crc(data: bytes, chunk_type: bytes) -> bytes:
    """The file with the last CRC byte of the first chunk of this type inverted."""
    pos = data.index(chunk_type) - 4
    length = struct.unpack(">I", data[pos : pos + 4])[0]
    crc_at = pos + 8 + length + 3
    return data[:crc_at] + bytes([data[crc_at] ^ 0xFF]) + data[crc_at + 1 :]


def _lf_to_crlf(data: bytes) -> bytes:
    return data.replace(b"\n", b"\r\n")


def _crlf_to_lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


@dataclass(frozen=True)
class Defect:
    name: str  # the fixture folder name, PngSuite style: x<what>
    why: str
    data: bytes
    error: str  # the class Image.open(...).load() raises: UnidentifiedImageError, OSError, DecompressionBombError
    fragment: str  # a piece of the message, case-insensitive


def invalid_cases(model_methods: dict[str, list[str]]) -> list[Defect]:
    """All defect fixtures. model_methods: learned method -> installed model ids (for MODL cases)."""
    good = raw_file()
    pixels = base_pixels().tobytes()
    sig_len = len(SIGNATURE)
    mhdr_end = sig_len + 12 + len(mhdr())
    metadata = frame(b"eXIf", EXIF) + frame(b"iCCP", ICC) + frame(b"xMPt", XMP)
    fltr, v11 = _filter_payload(3, 2, 3), mhdr(minor=1)
    with_meta = raw_file(metadata)
    cases = [
        # --- signature: not an mlimg file at all
        Defect("xsig-first-byte-7bit", "signature byte 0 has its high bit stripped (7-bit transfer)",
               b"\x0b" + good[1:], "UnidentifiedImageError", "cannot identify"),
        Defect("xsig-crlf-to-lf", "every CR LF turned into LF (text-mode transfer)", _crlf_to_lf(good),
               "UnidentifiedImageError", "cannot identify"),
        Defect("xsig-lf-to-crlf", "every LF turned into CR LF (text-mode transfer)", _lf_to_crlf(good),
               "UnidentifiedImageError", "cannot identify"),
        Defect("xsig-png", "a PNG signature instead of the mlimg one", b"\x89PNG" + good[4:],
               "UnidentifiedImageError", "cannot identify"),
        Defect("xsig-truncated", "the file is the first 5 bytes of the signature", good[:5],
               "UnidentifiedImageError", "cannot identify"),
        Defect("xsig-empty", "an empty file", b"", "UnidentifiedImageError", "cannot identify"),
        # --- CRC errors, one per chunk kind
        Defect("xcrc-MHDR", "MHDR CRC wrong", _flip_crc(good, b"MHDR"), "OSError", "CRC"),
        Defect("xcrc-RAWD", "method chunk RAWD CRC wrong", _flip_crc(good, b"RAWD"), "OSError", "CRC"),
        Defect("xcrc-MEND", "MEND CRC wrong", _flip_crc(good, b"MEND"), "OSError", "CRC"),
        Defect("xcrc-eXIf", "eXIf CRC wrong", _flip_crc(with_meta, b"eXIf"), "OSError", "CRC"),
        Defect("xcrc-iCCP", "iCCP CRC wrong", _flip_crc(with_meta, b"iCCP"), "OSError", "CRC"),
        Defect("xcrc-xMPt", "xMPt CRC wrong", _flip_crc(with_meta, b"xMPt"), "OSError", "CRC"),
        Defect("xcrc-MODL", "MODL CRC wrong", _flip_crc(raw_file(frame(b"MODL", b"\x04abcd" + bytes(32))), b"MODL"),
               "OSError", "CRC"),
        Defect("xcrc-ancillary", "unknown ancillary chunk with a wrong CRC (CRC is checked for every chunk)",
               _flip_crc(raw_file(frame(b"zFUT", b"future")), b"zFUT"), "OSError", "CRC"),
        # --- truncation
        Defect("xtrunc-in-mhdr-head", "file ends inside the MHDR length/type", good[: sig_len + 6], "OSError", "MHDR"),
        Defect("xtrunc-in-mhdr", "file ends inside the MHDR payload", good[: sig_len + 15], "OSError", "MHDR"),
        Defect("xtrunc-after-mhdr", "file ends right after MHDR", good[:mhdr_end], "OSError", "truncated"),
        Defect("xtrunc-in-rawd", "file ends inside the RAWD payload", good[: mhdr_end + 20], "OSError", "truncated"),
        Defect("xtrunc-in-mend", "file ends inside MEND", good[:-3], "OSError", "truncated"),
        Defect("xend-missing", "no MEND chunk", good[: -len(end())], "OSError", "MEND"),
        # --- header
        Defect("xhdr-missing", "the first chunk is RAWD, MHDR is absent",
               SIGNATURE + frame(b"RAWD", pixels) + end(), "OSError", "first chunk must be MHDR"),
        Defect("xhdr-duplicate", "a second MHDR after the first",
               raw_file(frame(b"MHDR", mhdr())), "OSError", "duplicate"),
        Defect("xhdr-major-2", "format version 2.0 (newer major)", raw_file(header=mhdr(major=2)), "OSError",
               "newer"),
        Defect("xhdr-major-0", "format version 0.9 (major 0 is invalid)", raw_file(header=mhdr(major=0, minor=9)),
               "OSError", "version"),
        Defect("xhdr-width-zero", "width 0", raw_file(header=mhdr(width=0), pixels=b""), "OSError", "image size"),
        Defect("xhdr-height-zero", "height 0", raw_file(header=mhdr(height=0), pixels=b""), "OSError", "image size"),
        Defect("xhdr-width-oversized", "width 2^24 + 1", raw_file(header=mhdr(width=(1 << 24) + 1)), "OSError",
               "image size"),
        Defect("xhdr-height-4g", "height 2^32 - 1", raw_file(header=mhdr(height=0xFFFFFFFF)), "OSError", "image size"),
        Defect("xhdr-mode-unknown", "mode code 9", raw_file(header=mhdr(mode=9)), "OSError", "mode"),
        Defect("xhdr-mode-zero", "mode code 0", raw_file(header=mhdr(mode=0)), "OSError", "mode"),
        Defect("xhdr-method-uppercase", "method name 'RAW' breaks [a-z0-9][a-z0-9_-]*",
               raw_file(header=mhdr(method=b"RAW")), "OSError", "method name"),
        Defect("xhdr-method-empty", "method name of length 0", raw_file(header=mhdr(method=b"")), "OSError",
               "method name"),
        Defect("xhdr-method-length-past-end", "method name length 200 runs past the MHDR payload",
               raw_file(header=mhdr()[:13] + b"\xc8raw"), "OSError", "method name"),
        Defect("xhdr-method-unknown", "method 'nosuchmethod' is not implemented",
               raw_file(header=mhdr(method=b"nosuchmethod")), "OSError", "unknown method"),
        Defect("xhdr-method-version-newer", "raw method version 99", raw_file(header=mhdr(method_version=99)),
               "OSError", "newer"),
        Defect("xhdr-trailing-bytes", "3 extension bytes in a 1.0 header (only newer minors may add them)",
               raw_file(header=mhdr(extension=b"\x00\x01\x02")), "OSError", "trailing"),
        Defect("xhdr-too-short", "MHDR payload of 5 bytes", raw_file(header=mhdr()[:5]), "OSError", "MHDR"),
        Defect("xhdr-length-over-4096", "MHDR claims 5000 bytes (limit 4096)",
               SIGNATURE + frame(b"MHDR", mhdr(), length=5000) + end(), "OSError", "4096"),
        # --- framing
        Defect("xchunk-length-beyond-file", "RAWD claims 1000 bytes, the file has fewer",
               SIGNATURE + frame(b"MHDR", mhdr()) + frame(b"RAWD", pixels, length=1000) + end(), "OSError",
               "truncated"),
        Defect("xchunk-length-4g", "RAWD claims 0xFFFFFFF0 bytes (over 2^31 - 1)",
               SIGNATURE + frame(b"MHDR", mhdr()) + frame(b"RAWD", pixels, length=0xFFFFFFF0) + end(), "OSError",
               "exceeds the limit"),
        Defect("xchunk-type-digit", "chunk type 'RAW1' has a digit",
               raw_file(frame(b"RAW1", b"x")), "OSError", "four ASCII letters"),
        Defect("xchunk-type-space", "chunk type 'zz z' has a space",
               raw_file(frame(b"zz z", b"x")), "OSError", "four ASCII letters"),
        Defect("xcritical-unknown", "unknown critical chunk 'QQQQ'", raw_file(frame(b"QQQQ", b"")), "OSError",
               "unknown critical chunk"),
        Defect("xcritical-other-method", "critical chunk 'KPAL' belongs to another method, not raw",
               raw_file(frame(b"KPAL", b"\x00")), "OSError", "unknown critical chunk"),
        Defect("xend-trailing-data", "4 bytes after MEND", good + b"junk", "OSError", "follow the end chunk"),
        Defect("xend-payload", "MEND with a 2-byte payload", good[: -len(end())] + frame(b"MEND", b"\x00\x00"),
               "OSError", "MEND"),
        Defect("xend-twice", "a second MEND after the first", good + end(), "OSError", "follow the end chunk"),
        # --- metadata and model chunks
        Defect("xdup-eXIf", "eXIf appears twice", raw_file(frame(b"eXIf", EXIF) * 2), "OSError", "only once"),
        Defect("xdup-iCCP", "iCCP appears twice", raw_file(frame(b"iCCP", ICC) * 2), "OSError", "only once"),
        Defect("xdup-xMPt", "xMPt appears twice", raw_file(frame(b"xMPt", XMP) * 2), "OSError", "only once"),
        Defect("xmodl-on-raw", "a well-formed MODL in a raw file (raw uses no model)",
               raw_file(frame(b"MODL", b"\x04abcd" + bytes(32))), "OSError", "uses no model"),
        Defect("xmodl-malformed", "MODL whose id length runs past the payload",
               raw_file(frame(b"MODL", b"\xffabcd")), "OSError", "MODL"),
        Defect("xmodl-id-space", "MODL id with a space (not printable-no-space ASCII)",
               raw_file(frame(b"MODL", b"\x04ab d" + bytes(32))), "OSError", "MODL"),
        Defect("xmodl-trailing", "MODL with a byte after the sha256",
               raw_file(frame(b"MODL", b"\x04abcd" + bytes(33))), "OSError", "MODL"),
        # --- method payload (raw's own rule)
        Defect("xrawd-short", "RAWD holds one byte fewer than 5x4 RGB needs", raw_file(pixels=pixels[:-1]),
               "OSError", "RAWD"),
        Defect("xrawd-long", "RAWD holds one byte more than 5x4 RGB needs", raw_file(pixels=pixels + b"\x00"),
               "OSError", "RAWD"),
        Defect("xrawd-missing", "no RAWD chunk at all", SIGNATURE + frame(b"MHDR", mhdr()) + end(), "OSError",
               "RAWD"),
        # --- the loop filter (spec section 14)
        Defect("xfltr-version", "fLTR payload version 1", raw_file(frame(b"fLTR", b"\x01" + fltr[1:]), header=v11),
               "OSError", "version 1 is not supported"),
        Defect("xfltr-channels", "fLTR for 1 channel in an RGB file", raw_file(frame(b"fLTR", _filter_payload(1, 1, 1)),
               header=v11), "OSError", "filters 1 colour channel"),
        Defect("xfltr-duplicate", "fLTR appears twice", raw_file(frame(b"fLTR", fltr) * 2, header=v11), "OSError",
               "only once"),
        Defect("xfltr-truncated-coefficients", "fLTR whose coefficient bits end early",
               raw_file(frame(b"fLTR", fltr[:-4]), header=v11), "OSError", "coefficient data ends"),
        Defect("xfltr-trailing-bytes", "fLTR with a byte after the coefficients' padding",
               raw_file(frame(b"fLTR", fltr + b"\x00"), header=v11), "OSError", "data after the coefficients"),
        Defect("xfltr-16-bit", "fLTR in an I;16 file (the filter is for 8-bit modes)",
               SIGNATURE + frame(b"MHDR", mhdr(2, 2, MODE_CODES["I;16"], minor=1)) + frame(b"RAWD", bytes(8))
               + frame(b"fLTR", _filter_payload(1, 1, 1)) + end(), "OSError", "mode I;16 has no loop filter"),
        # --- resource limits
        Defect("xbomb-2p31-pixels", "header claims 65536 x 32768 = 2^31 pixels (decompression bomb)",
               raw_file(header=mhdr(width=1 << 16, height=1 << 15)), "DecompressionBombError", "decompression bomb"),
        Defect("xbomb-max-dims", "header claims 2^24 x 2^24 pixels",
               raw_file(header=mhdr(width=1 << 24, height=1 << 24)), "DecompressionBombError", "decompression bomb"),
        Defect("xbomb-under-limit-tiny-payload", "header claims 8000 x 8000 (under the bomb limit), RAWD is tiny",
               raw_file(header=mhdr(width=8000, height=8000)), "OSError", "RAWD"),
    ]
    cases += _model_cases(model_methods)
    return cases


def _filter_payload(channels: int, n_act: int, n_dir: int, zero: bool = False) -> bytes:
    """A well-formed fLTR payload with small fixed coefficients (or all zeros)."""
    from . import loop_filter

    shape = (channels, n_act * n_dir, loop_filter.feature_count(channels))
    coefficients = np.zeros(shape, np.int64) if zero else (np.arange(np.prod(shape)).reshape(shape) % 7 - 3)
    thresholds = tuple(range(100, 100 * n_act, 100))
    return loop_filter.pack(loop_filter.LoopFilter(channels, n_act, n_dir, thresholds, coefficients))


def _model_cases(model_methods: dict[str, list[str]]) -> list[Defect]:
    """MODL defects for the learned methods present: unknown model id, sha256 mismatch."""
    cases = []
    for method, ids in sorted(model_methods.items()):
        header = mhdr(method=method.encode(), mode=MODE_CODES["RGB"])
        bogus = b"no-such-model-v0"
        modl = frame(b"MODL", bytes([len(bogus)]) + bogus + hashlib.sha256(b"nothing").digest())
        data = SIGNATURE + frame(b"MHDR", header) + modl + end()
        cases.append(Defect(f"xmodel-unknown-id-{method}", f"{method} file naming a model id nobody ships", data,
                            "OSError", "no-such-model-v0"))
        missing = SIGNATURE + frame(b"MHDR", header) + end()
        cases.append(Defect(f"xmodel-missing-modl-{method}", f"{method} needs a MODL chunk and has none", missing,
                            "OSError", "MODL"))
        if ids:
            real = ids[0].encode()
            modl = frame(b"MODL", bytes([len(real)]) + real + bytes(32))
            data = SIGNATURE + frame(b"MHDR", header) + modl + end()
            cases.append(Defect(f"xmodel-sha256-mismatch-{method}", f"{method} file whose MODL sha256 is all zeros",
                                data, "OSError", "sha256"))
        if method == "cae" and ids:
            cases += _cae_latent_cases(ids[0])
    return cases


def _cae_latent_cases(model_id: str) -> list[Defect]:
    """LATN defects of a real cae file (spec/methods/cae.md): unknown coding, context coding
    in a version 1 file, one escape more than the stream codes."""
    from .codecs import get

    codec = get("cae")
    w, h = 24, 16
    encoded = codec.encode(synth_pixels("RGB", w, h, 77), "RGB", codec.validate_options("RGB", {"model": model_id}))
    latn = dict(encoded.chunks)["LATN"]
    name, sha = encoded.model
    modl = frame(b"MODL", bytes([len(name)]) + name.encode() + sha)

    def cae_file(payload: bytes, version: int = codec.version) -> bytes:
        header = mhdr(w, h, MODE_CODES["RGB"], method=b"cae", method_version=version)
        return SIGNATURE + frame(b"MHDR", header) + modl + frame(b"LATN", payload) + end()

    n_esc = struct.unpack_from(">I", latn, 8)[0]
    one_more = latn[:8] + struct.pack(">I", n_esc + 1) + latn[12 : 12 + 2 * n_esc] + b"\x00\x07" + latn[12 + 2 * n_esc :]
    cases = [
        Defect("xcae-latn-unknown-coding", "cae LATN coding byte 2 (0: factorised, 1: context-adaptive)",
               cae_file(latn[:1] + b"\x02" + latn[2:]), "OSError", "coding byte is 2"),
        Defect("xcae-latn-escape-count", "cae LATN lists one escaped value more than its stream codes",
               cae_file(one_more), "OSError", "LATN"),
    ]
    if latn[1] == 1:  # the model has context tables: its files use coding 1
        cases.append(Defect("xcae-latn-context-coding-in-v1", "cae method version 1 file with LATN coding 1 "
                            "(context-adaptive coding is version 2)", cae_file(latn, 1), "OSError", "method version 1 allows 0"))
    return cases


@dataclass(frozen=True)
class Oddity:
    name: str
    why: str
    data: bytes


def compat_cases() -> list[Oddity]:
    """Files every 1.x decoder must accept; each decodes to base_pixels() exactly."""
    pixels = base_pixels().tobytes()
    head = SIGNATURE + frame(b"MHDR", mhdr())
    third = len(pixels) // 3
    return [
        Oddity("unknown-ancillary", "unknown ancillary chunk 'zFUT' before the method chunk",
               raw_file(frame(b"zFUT", b"a future encoder's note"))),
        Oddity("unknown-ancillary-between", "unknown ancillary chunks between split RAWD chunks and before MEND",
               head + frame(b"RAWD", pixels[:third]) + frame(b"tIME", b"\x07\xea") + frame(b"RAWD", pixels[third:])
               + frame(b"zzzz", b"") + end()),
        Oddity("unknown-ancillary-empty", "an empty unknown ancillary chunk", raw_file(frame(b"aBCD", b""))),
        Oddity("unknown-ancillary-odd-case", "ancillary chunk 'qXYZ': only the first letter's case matters",
               raw_file(frame(b"qXYZ", b"\x00" * 7))),
        Oddity("minor-version-1-2", "format version 1.2 with 4 MHDR extension bytes a 1.1 decoder ignores",
               raw_file(header=mhdr(minor=2, extension=b"\x00\x00\x00\x2a"))),
        Oddity("loop-filter-zero-before-method-chunks", "format 1.1: an fLTR of all-zero coefficients (4x3 "
               "classes) before RAWD; decoders accept it anywhere, and zero coefficients change no pixel",
               raw_file(frame(b"fLTR", _filter_payload(3, 4, 3, zero=True)), header=mhdr(minor=1))),
        Oddity("minor-version-1-255", "format version 1.255, no extension bytes",
               raw_file(header=mhdr(minor=255))),
        Oddity("metadata-after-method-chunks", "eXIf / iCCP / xMPt after RAWD (decoders accept them anywhere)",
               head + frame(b"RAWD", pixels) + frame(b"xMPt", XMP) + frame(b"iCCP", ICC) + frame(b"eXIf", EXIF)
               + end()),
        Oddity("raw-split-empty", "RAWD split into an empty chunk and three pieces",
               head + frame(b"RAWD", b"") + frame(b"RAWD", pixels[:1]) + frame(b"RAWD", pixels[1:third])
               + frame(b"RAWD", pixels[third:]) + end()),
        Oddity("many-ancillary", "200 unknown ancillary chunks (a chatty future encoder)",
               raw_file(b"".join(frame(b"nOTE", str(i).encode()) for i in range(200)))),
    ]
