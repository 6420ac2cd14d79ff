"""The .mlimg v1 container: signature, chunk framing, CRC-32, header, limits.

This module is the machine-readable form of spec/MLIMG.md. It knows nothing
about compression methods: every chunk it does not own is an opaque payload.

Untrusted bytes are parsed with the *uncompiled* construct schema (the compiled
one skips checks), one chunk at a time in an explicit loop that stops at MEND
and then demands end of stream. A chunk's claimed length is checked against
the bytes that remain before anything is read. construct's own exceptions
never leave this module: a wrong signature is a SyntaxError ("not an mlimg
file"), anything else wrong is a ContainerError (an OSError) whose message
names the chunk and its file offset.
"""
from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable

from construct import (
    Bytes,
    Checksum,
    ChecksumError,
    ConstructError,
    ExprValidator,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32ub,
    Mapping,
    PascalString,
    Rebuild,
    Struct,
    len_,
    this,
)

SIGNATURE = b"\x8bMLI\r\n\x1a\n"
FORMAT_VERSION = (1, 1)  # (major, minor) this module fully understands; files use the lowest that describes them
LOOP_FILTER_VERSION = (1, 1)  # the first version with the fLTR chunk

MAX_DIMENSION = 1 << 24  # width and height, each
MAX_CHUNK_LENGTH = (1 << 31) - 1
MAX_MHDR_LENGTH = 4096  # MHDR is read before anything else, so its size is bounded tightly
METHOD_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
MODEL_ID_RE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces

MODE_CODES = {"L": 1, "RGB": 2, "RGBA": 3, "I;16": 4}

# Chunk types the container owns: type -> one-line payload layout (critical = upper-case first letter).
# spec/MLIMG.md's registry table lists exactly these (tests/test_spec_registry.py).
CONTAINER_CHUNKS = {
    "MHDR": "format version major u8, minor u8; width u32; height u32; mode u8; method version u16; method name (u8 length + ASCII)",
    "MODL": "model id (u8 length + ASCII) + 32-byte SHA-256 of the weights",
    "eXIf": "EXIF data (TIFF structure, no 'Exif\\0\\0' prefix), copied unchanged",
    "iCCP": "ICC profile bytes (uncompressed), copied unchanged",
    "xMPt": "XMP packet (UTF-8 XML), copied unchanged",
    "fLTR": "adaptive loop filter: class layout and integer coefficients applied to the decoded colour channels",
    "MEND": "empty",
}
# Pillow info key -> metadata chunk type.
METADATA_CHUNKS = {"exif": "eXIf", "icc_profile": "iCCP", "xmp": "xMPt"}
# Chunks that may appear at most once between MHDR and MEND.
_UNIQUE_CHUNKS = ("MODL", "eXIf", "iCCP", "xMPt", "fLTR")

_CHUNK_HEAD_SIZE = 8  # length u32 + type
_CHUNK_OVERHEAD = 12  # length u32 + type + CRC u32


def is_chunk_type(name: object) -> bool:
    """Four ASCII letters, A-Z or a-z."""
    return isinstance(name, str) and len(name) == 4 and name.isascii() and name.isalpha()


def is_critical(chunk_type: str) -> bool:
    return chunk_type[0].isupper()


# ---------------------------------------------------------------- construct schema

ChunkType = ExprValidator(Bytes(4), lambda obj, ctx: obj.isalpha() and obj.isascii())

ChunkHead = Struct("length" / Int32ub, "type" / ChunkType)

Chunk = Struct(
    "length" / Rebuild(Int32ub, len_(this.data)),
    "type" / ChunkType,
    "data" / Bytes(this.length),
    "crc" / Checksum(Int32ub, zlib.crc32, lambda ctx: ctx.type + ctx.data),
)

VersionPrefix = Struct("major" / Int8ub, "minor" / Int8ub)

_Dimension = ExprValidator(Int32ub, lambda obj, ctx: 1 <= obj <= MAX_DIMENSION)

HeaderPayload = Struct(
    "major" / Int8ub,
    "minor" / Int8ub,
    "width" / _Dimension,
    "height" / _Dimension,
    "mode" / Mapping(Int8ub, MODE_CODES),
    "method_version" / Int16ub,
    "method" / ExprValidator(PascalString(Int8ub, "ascii"), lambda obj, ctx: bool(METHOD_NAME_RE.fullmatch(obj))),
    # Fields appended by later minor versions; must be empty in a 1.0 file.
    "extension" / GreedyBytes,
)

ModelPayload = Struct(
    "model_id" / ExprValidator(PascalString(Int8ub, "ascii"), lambda obj, ctx: bool(MODEL_ID_RE.fullmatch(obj))),
    "sha256" / Bytes(32),
)

_PARSE_ERRORS = (ConstructError, UnicodeError, ValueError, TypeError)


class ContainerError(OSError):
    """The file is an .mlimg file but violates the container rules (message names chunk and offset)."""


def _chunk_error(chunk_type: str, offset: int, what: str) -> ContainerError:
    return ContainerError(f"chunk {chunk_type!r} at offset {offset}: {what}")


# ---------------------------------------------------------------- data model


@dataclass(frozen=True)
class FileHeader:
    """The MHDR chunk."""

    width: int
    height: int
    mode: str
    method: str
    method_version: int = 1
    version: tuple[int, int] = (1, 0)  # a file uses 1.1 only when it has a 1.1 chunk (fLTR)
    extension: bytes = b""  # MHDR bytes added by a newer minor version, kept for build(parse(x)) == x

    @property
    def version_string(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


@dataclass(frozen=True)
class RawChunk:
    """One chunk between MHDR and MEND."""

    type: str
    data: bytes
    offset: int = field(default=-1, compare=False)  # file offset of its length field; bookkeeping only


@dataclass
class MlimgFile:
    header: FileHeader
    chunks: list[RawChunk]  # in file order, MHDR and MEND excluded
    truncated: str | None = None  # why reading stopped before MEND (only with allow_truncated)
    length: int = 0  # bytes of the file that were consumed

    def find(self, chunk_type: str) -> RawChunk | None:
        return next((c for c in self.chunks if c.type == chunk_type), None)


# ---------------------------------------------------------------- header and MODL payloads


def parse_header_payload(data: bytes, offset: int = len(SIGNATURE)) -> FileHeader:
    """MHDR payload -> FileHeader; refuses a newer major version with a clear message."""
    try:
        version = VersionPrefix.parse(data)
    except _PARSE_ERRORS:
        raise _chunk_error("MHDR", offset, f"payload of {len(data)} bytes is too short for the version") from None
    major, minor = version.major, version.minor
    if major > FORMAT_VERSION[0]:
        raise ContainerError(
            f"format version {major}.{minor} is newer than this decoder supports ({FORMAT_VERSION[0]}.x)"
        )
    if major < 1:
        raise ContainerError(f"format version {major}.{minor} is not a valid mlimg version (1.x is supported)")
    try:
        parsed = HeaderPayload.parse(data)
    except _PARSE_ERRORS as exc:
        raise _chunk_error("MHDR", offset, _explain_header(data, exc)) from None
    if parsed.extension and minor <= FORMAT_VERSION[1]:
        raise _chunk_error("MHDR", offset, f"{len(parsed.extension)} unexpected trailing bytes in a {major}.{minor} header")
    return FileHeader(
        width=parsed.width,
        height=parsed.height,
        mode=parsed.mode,
        method=parsed.method,
        method_version=parsed.method_version,
        version=(major, minor),
        extension=bytes(parsed.extension),
    )


def _explain_header(data: bytes, exc: Exception) -> str:
    """A human sentence for the first MHDR field that is wrong."""
    if len(data) < 13:
        return f"payload of {len(data)} bytes is too short (at least 13 needed)"
    width, height = int.from_bytes(data[2:6], "big"), int.from_bytes(data[6:10], "big")
    if not 1 <= width <= MAX_DIMENSION or not 1 <= height <= MAX_DIMENSION:
        return f"image size {width}x{height} is outside 1..{MAX_DIMENSION}"
    if data[10] not in MODE_CODES.values():
        return f"unknown mode code {data[10]} (valid: {', '.join(f'{v}={k}' for k, v in MODE_CODES.items())})"
    return f"bad method name field ({type(exc).__name__}); must match {METHOD_NAME_RE.pattern}"


def build_header_payload(header: FileHeader) -> bytes:
    _check_header(header)
    return HeaderPayload.build(
        dict(
            major=header.version[0],
            minor=header.version[1],
            width=header.width,
            height=header.height,
            mode=header.mode,
            method_version=header.method_version,
            method=header.method,
            extension=header.extension,
        )
    )


def _check_header(header: FileHeader) -> None:
    """ValueError for a header that would make an invalid file."""
    if not (isinstance(header.width, int) and isinstance(header.height, int)):
        raise ValueError("width and height must be integers")
    if not (1 <= header.width <= MAX_DIMENSION and 1 <= header.height <= MAX_DIMENSION):
        raise ValueError(f"image size {header.width}x{header.height} is outside 1..{MAX_DIMENSION}")
    if header.mode not in MODE_CODES:
        raise ValueError(f"mode {header.mode!r} is not supported; valid modes: {', '.join(MODE_CODES)}")
    if not isinstance(header.method, str) or not METHOD_NAME_RE.fullmatch(header.method):
        raise ValueError(f"method name {header.method!r} must match {METHOD_NAME_RE.pattern}")
    if not 0 <= header.method_version <= 0xFFFF:
        raise ValueError(f"method version {header.method_version} is outside 0..65535")
    major, minor = header.version
    if major != FORMAT_VERSION[0] or not 0 <= minor <= 255:
        raise ValueError(f"format version {major}.{minor} cannot be written; this writer knows {FORMAT_VERSION[0]}.x")
    if header.extension and minor <= FORMAT_VERSION[1]:
        raise ValueError("header extension bytes need a newer minor version")


def parse_model_payload(data: bytes, offset: int = -1) -> tuple[str, bytes]:
    """MODL payload -> (model id, sha256)."""
    try:
        parsed = ModelPayload.parse(data)
    except _PARSE_ERRORS:
        raise _chunk_error(
            "MODL", offset, "payload must be a model id (u8 length + printable ASCII) followed by a 32-byte SHA-256"
        ) from None
    expected = 1 + len(parsed.model_id) + 32
    if len(data) != expected:
        raise _chunk_error("MODL", offset, f"payload is {len(data)} bytes, expected {expected}")
    return parsed.model_id, bytes(parsed.sha256)


def build_model_payload(model_id: str, sha256: bytes) -> bytes:
    if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
        raise ValueError(f"model id {model_id!r} must be 1..255 printable ASCII characters without spaces")
    if not isinstance(sha256, (bytes, bytearray)) or len(sha256) != 32:
        raise ValueError("model sha256 must be 32 bytes")
    return ModelPayload.build(dict(model_id=model_id, sha256=bytes(sha256)))


# ---------------------------------------------------------------- reading


def check_signature(data: bytes) -> None:
    """SyntaxError unless data starts with the mlimg signature (Pillow's 'not this format')."""
    if data[: len(SIGNATURE)] != SIGNATURE:
        if data[:4] == SIGNATURE[:4]:
            raise SyntaxError("mlimg signature is damaged (line-ending or 7-bit conversion?)")
        raise SyntaxError("not an mlimg file")


def read_header(fp: BinaryIO) -> tuple[FileHeader, int]:
    """Read signature + MHDR from a stream; returns the header and the bytes consumed."""
    check_signature(fp.read(len(SIGNATURE)))
    offset = len(SIGNATURE)
    head = fp.read(_CHUNK_HEAD_SIZE)
    if len(head) < _CHUNK_HEAD_SIZE:
        raise ContainerError(f"file ends at offset {offset + len(head)} before the MHDR chunk")
    length, chunk_type = _parse_head(head, offset)
    if chunk_type != "MHDR":
        raise _chunk_error(chunk_type, offset, "the first chunk must be MHDR")
    if length > MAX_MHDR_LENGTH:
        raise _chunk_error("MHDR", offset, f"length {length} exceeds the MHDR limit of {MAX_MHDR_LENGTH}")
    rest = fp.read(length + 4)
    if len(rest) < length + 4:
        raise _chunk_error("MHDR", offset, "file ends inside the chunk")
    chunk = _parse_chunk(head + rest, offset)
    return parse_header_payload(chunk.data, offset), offset + len(head) + len(rest)


def read_chunks(data: bytes, offset: int, *, allow_truncated: bool = False) -> tuple[list[RawChunk], str | None, int]:
    """Parse the chunks after MHDR from `data` (the rest of the file, starting at file offset `offset`).

    Returns (chunks before MEND, truncation reason or None, file length consumed).
    A file that ends early raises ContainerError unless allow_truncated, in which case the
    complete chunks read so far are returned together with the reason.
    """
    chunks: list[RawChunk] = []
    seen: set[str] = set()
    pos = 0  # position inside data
    while True:
        file_pos = offset + pos
        remaining = len(data) - pos
        if remaining < _CHUNK_HEAD_SIZE:
            last = chunks[-1].type if chunks else "MHDR"
            where = "after" if remaining == 0 else "inside the chunk header following"
            reason = f"file ends at offset {file_pos + remaining} {where} chunk {last!r}, before MEND"
            return _truncated(chunks, reason, offset + len(data), allow_truncated)
        length, chunk_type = _parse_head(data[pos : pos + _CHUNK_HEAD_SIZE], file_pos)
        if length > MAX_CHUNK_LENGTH:
            raise _chunk_error(chunk_type, file_pos, f"length {length} exceeds the limit of {MAX_CHUNK_LENGTH}")
        if length + _CHUNK_OVERHEAD > remaining:
            reason = (
                f"chunk {chunk_type!r} at offset {file_pos} needs {length + _CHUNK_OVERHEAD} bytes "
                f"but the file has only {remaining} left (truncated)"
            )
            return _truncated(chunks, reason, offset + len(data), allow_truncated)
        chunk = _parse_chunk(data[pos : pos + length + _CHUNK_OVERHEAD], file_pos)
        pos += length + _CHUNK_OVERHEAD
        if chunk.type == "MEND":
            if chunk.data:
                raise _chunk_error("MEND", file_pos, f"payload must be empty, found {len(chunk.data)} bytes")
            if pos != len(data):
                raise _chunk_error("MEND", file_pos, f"{len(data) - pos} bytes follow the end chunk")
            return chunks, None, offset + pos
        if chunk.type == "MHDR":
            raise _chunk_error("MHDR", file_pos, "duplicate header chunk")
        if chunk.type in _UNIQUE_CHUNKS:
            if chunk.type in seen:
                raise _chunk_error(chunk.type, file_pos, "may appear only once")
            seen.add(chunk.type)
        if chunk.type == "MODL":
            parse_model_payload(chunk.data, file_pos)
        chunks.append(chunk)


def _truncated(chunks, reason, end, allow_truncated):
    if not allow_truncated:
        raise ContainerError(reason)
    return chunks, reason, end


def _parse_head(head: bytes, offset: int) -> tuple[int, str]:
    try:
        parsed = ChunkHead.parse(head)
    except _PARSE_ERRORS:
        raise ContainerError(f"chunk at offset {offset}: type {head[4:8]!r} is not four ASCII letters") from None
    return parsed.length, parsed.type.decode("ascii")


def _parse_chunk(raw: bytes, offset: int) -> RawChunk:
    try:
        parsed = Chunk.parse(raw)
    except _PARSE_ERRORS as exc:
        chunk_type = raw[4:8].decode("ascii", "replace")
        what = "CRC-32 mismatch (corrupt data)" if isinstance(exc, ChecksumError) else f"malformed ({exc})"
        raise _chunk_error(chunk_type, offset, what) from None
    return RawChunk(parsed.type.decode("ascii"), bytes(parsed.data), offset)


def parse(data: bytes, *, allow_truncated: bool = False) -> MlimgFile:
    """Parse a whole .mlimg file from bytes."""
    data = bytes(data)
    header, consumed = read_header(io.BytesIO(data))
    chunks, truncated, end = read_chunks(data[consumed:], consumed, allow_truncated=allow_truncated)
    return MlimgFile(header, chunks, truncated, end)


def read(fp: BinaryIO, *, allow_truncated: bool = False) -> MlimgFile:
    """Parse a whole .mlimg file from a binary stream positioned at its start."""
    header, consumed = read_header(fp)
    chunks, truncated, end = read_chunks(fp.read(), consumed, allow_truncated=allow_truncated)
    return MlimgFile(header, chunks, truncated, end)


# ---------------------------------------------------------------- writing


def build_chunk(chunk_type: str, data: bytes) -> bytes:
    if not is_chunk_type(chunk_type):
        raise ValueError(f"chunk type {chunk_type!r} must be four ASCII letters")
    if len(data) > MAX_CHUNK_LENGTH:
        raise ValueError(f"chunk {chunk_type!r} payload of {len(data)} bytes exceeds {MAX_CHUNK_LENGTH}")
    return Chunk.build(dict(type=chunk_type.encode("ascii"), data=bytes(data)))


def build(header: FileHeader, chunks: Iterable[RawChunk | tuple[str, bytes]]) -> bytes:
    """Signature + MHDR + chunks + MEND. ValueError for anything that would make an invalid file."""
    parts = [SIGNATURE, build_chunk("MHDR", build_header_payload(header))]
    seen: set[str] = set()
    for chunk in chunks:
        chunk_type, data = (chunk.type, chunk.data) if isinstance(chunk, RawChunk) else chunk
        if chunk_type in ("MHDR", "MEND"):
            raise ValueError(f"{chunk_type} is written by the container, not passed as a chunk")
        if chunk_type in _UNIQUE_CHUNKS:
            if chunk_type in seen:
                raise ValueError(f"chunk {chunk_type} may appear only once")
            seen.add(chunk_type)
        if chunk_type == "MODL":
            try:
                parse_model_payload(data)  # refuse to write a MODL we could not read back
            except ContainerError as exc:
                raise ValueError(str(exc)) from None
        parts.append(build_chunk(chunk_type, data))
    parts.append(build_chunk("MEND", b""))
    return b"".join(parts)


def write(fp: BinaryIO, header: FileHeader, chunks: Iterable[RawChunk | tuple[str, bytes]]) -> int:
    data = build(header, chunks)
    fp.write(data)
    return len(data)
