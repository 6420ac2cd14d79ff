"""The container schema: framing, CRC, header, versions, limits, and robustness on hostile bytes."""
from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlimg import container as c
from mlimg.container import ContainerError, FileHeader, RawChunk

HEADER = FileHeader(width=3, height=2, mode="RGB", method="raw", method_version=1)
SHA = bytes(range(32))


def chunk_bytes(chunk_type: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(chunk_type + data) if crc is None else crc
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", crc)


def mhdr(major=1, minor=0, width=3, height=2, mode=2, method=b"raw", extra=b"") -> bytes:
    payload = struct.pack(">BBIIBH", major, minor, width, height, mode, 1) + bytes([len(method)]) + method + extra
    return chunk_bytes(b"MHDR", payload)


def file_bytes(*chunks: bytes, header: bytes | None = None, end: bool = True) -> bytes:
    tail = chunk_bytes(b"MEND", b"") if end else b""
    return c.SIGNATURE + (mhdr() if header is None else header) + b"".join(chunks) + tail


def test_minimal_file_layout():
    data = c.build(HEADER, [("RAWD", b"\x01\x02")])
    assert data.startswith(b"\x8bMLI\r\n\x1a\n")
    assert data == file_bytes(chunk_bytes(b"RAWD", b"\x01\x02"))
    assert data.endswith(b"\x00\x00\x00\x00MEND\x21\x20\xf7\xd5")


def test_parse_gives_header_and_chunks():
    data = c.build(HEADER, [("MODL", c.build_model_payload("m-1", SHA)), ("eXIf", b"II*\0"), ("RAWD", b"abc")])
    parsed = c.parse(data)
    assert parsed.header == HEADER
    assert [(ch.type, ch.data) for ch in parsed.chunks] == [
        ("MODL", c.build_model_payload("m-1", SHA)),
        ("eXIf", b"II*\0"),
        ("RAWD", b"abc"),
    ]
    assert parsed.truncated is None and parsed.length == len(data)
    assert parsed.chunks[0].offset == 8 + 12 + 17  # after signature and MHDR
    assert c.parse_model_payload(parsed.find("MODL").data) == ("m-1", SHA)


def test_build_of_parse_is_identity():
    data = c.build(HEADER, [("RAWD", b"x" * 40), ("abCd", b""), ("RAWD", b"y")])
    parsed = c.parse(data)
    assert c.build(parsed.header, parsed.chunks) == data


def test_read_from_stream_matches_parse(tmp_path):
    data = c.build(HEADER, [("RAWD", b"q" * 18)])
    path = tmp_path / "a.mlimg"
    path.write_bytes(data)
    with open(path, "rb") as fp:
        assert c.read(fp) == c.parse(data)


def test_not_mlimg_is_syntax_error():
    with pytest.raises(SyntaxError, match="not an mlimg file"):
        c.parse(b"\x89PNG\r\n\x1a\n" + b"\0" * 30)
    with pytest.raises(SyntaxError):
        c.parse(b"")


def test_line_ending_conversion_is_detected():
    good = c.build(HEADER, [("RAWD", b"z" * 18)])
    for damaged in (good.replace(b"\r\n", b"\n", 1), good.replace(b"\n", b"\r\n", 1)):
        with pytest.raises(SyntaxError, match="damaged"):
            c.parse(damaged)


def test_crc_mismatch_names_chunk_and_offset():
    data = bytearray(c.build(HEADER, [("RAWD", b"abcdef")]))
    data[8 + 29 + 8] ^= 0xFF  # first payload byte of RAWD
    with pytest.raises(ContainerError, match=r"chunk 'RAWD' at offset 37: CRC-32 mismatch"):
        c.parse(bytes(data))


def test_newer_major_version_is_refused_clearly():
    with pytest.raises(ContainerError, match=r"format version 2\.0 is newer than this decoder supports \(1\.x\)"):
        c.parse(file_bytes(header=mhdr(major=2)))
    with pytest.raises(ContainerError, match="0.3 is not a valid"):
        c.parse(file_bytes(header=mhdr(major=0, minor=3)))


def test_newer_minor_version_opens_and_keeps_extension():
    data = file_bytes(chunk_bytes(b"RAWD", b"x"), header=mhdr(minor=7, extra=b"future"))
    parsed = c.parse(data)
    assert parsed.header.version == (1, 7)
    assert parsed.header.extension == b"future"
    assert c.build(parsed.header, parsed.chunks) == data


def test_extension_bytes_in_a_1_0_header_are_invalid():
    with pytest.raises(ContainerError, match="MHDR.*trailing bytes"):
        c.parse(file_bytes(header=mhdr(extra=b"!")))


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(width=0), r"image size 0x2 is outside"),
        (dict(height=(1 << 24) + 1), r"outside 1\.\.16777216"),
        (dict(mode=9), "unknown mode code 9"),
        (dict(method=b""), "method name"),
        (dict(method=b"Raw!"), "method name"),
        (dict(method=b"\xffab"), "method name"),
    ],
)
def test_bad_header_fields(fields, message):
    with pytest.raises(ContainerError, match=message):
        c.parse(file_bytes(header=mhdr(**fields)))


def test_short_header_payload():
    with pytest.raises(ContainerError, match="MHDR.*too short"):
        c.parse(c.SIGNATURE + chunk_bytes(b"MHDR", b"\x01\x00\x00"))


def test_first_chunk_must_be_mhdr():
    with pytest.raises(ContainerError, match="'RAWD' at offset 8: the first chunk must be MHDR"):
        c.parse(c.SIGNATURE + chunk_bytes(b"RAWD", b"") + chunk_bytes(b"MEND", b""))


def test_huge_mhdr_length_is_refused_before_reading():
    with pytest.raises(ContainerError, match="exceeds the MHDR limit"):
        c.parse(c.SIGNATURE + struct.pack(">I", 1 << 30) + b"MHDR" + b"\0" * 20)


def test_duplicate_and_misplaced_chunks():
    with pytest.raises(ContainerError, match="duplicate header"):
        c.parse(file_bytes(mhdr()))
    exif = chunk_bytes(b"eXIf", b"II*\0")
    with pytest.raises(ContainerError, match="'eXIf' at offset .*: may appear only once"):
        c.parse(file_bytes(exif, exif))


def test_mend_rules():
    with pytest.raises(ContainerError, match="'MEND'.*payload must be empty"):
        c.parse(file_bytes(chunk_bytes(b"MEND", b"x"), end=False))
    with pytest.raises(ContainerError, match="'MEND'.*3 bytes follow"):
        c.parse(file_bytes() + b"abc")


def test_chunk_type_must_be_letters():
    with pytest.raises(ContainerError, match="not four ASCII letters"):
        c.parse(file_bytes(chunk_bytes(b"RA1D", b"")))


def test_length_over_limit():
    head = struct.pack(">I", 0xFFFFFFFF) + b"RAWD"
    with pytest.raises(ContainerError, match="exceeds the limit"):
        c.parse(c.SIGNATURE + mhdr() + head + b"\0" * 8)


def test_claimed_length_past_end_of_file_is_truncation_not_allocation():
    head = struct.pack(">I", (1 << 31) - 1) + b"RAWD"
    with pytest.raises(ContainerError, match="needs 2147483659 bytes but the file has only 12 left"):
        c.parse(c.SIGNATURE + mhdr() + head + b"\0" * 4)


def test_truncated_file_without_and_with_allowance():
    full = c.build(HEADER, [("eXIf", b"II*\0"), ("RAWD", b"0123456789")])
    for cut in (len(full) - 12, len(full) - 15, len(full) - 3):
        with pytest.raises(ContainerError, match="truncated|before MEND"):
            c.parse(full[:cut])
    parsed = c.parse(full[: len(full) - 15], allow_truncated=True)  # inside RAWD: partial chunk dropped
    assert [ch.type for ch in parsed.chunks] == ["eXIf"]
    assert "RAWD" in parsed.truncated
    parsed = c.parse(full[: len(full) - 12], allow_truncated=True)  # MEND missing
    assert [ch.type for ch in parsed.chunks] == ["eXIf", "RAWD"]
    assert "before MEND" in parsed.truncated


def test_model_payload_rules():
    payload = c.build_model_payload("cae-q8-v1", SHA)
    assert payload == b"\x09cae-q8-v1" + SHA
    assert c.parse_model_payload(payload) == ("cae-q8-v1", SHA)
    for bad in (payload[:-1], payload + b"\0", b"\x00" + SHA, b"\x03a b" + SHA):
        with pytest.raises(ContainerError, match="MODL"):
            c.parse_model_payload(bad)
    with pytest.raises(ContainerError, match="MODL"):
        c.parse(file_bytes(chunk_bytes(b"MODL", b"\x02ab")))
    with pytest.raises(ValueError):
        c.build_model_payload("has space", SHA)
    with pytest.raises(ValueError):
        c.build_model_payload("ok", b"short")


@pytest.mark.parametrize(
    "header, chunks",
    [
        (FileHeader(0, 1, "L", "raw"), []),
        (FileHeader(1, 1, "P", "raw"), []),
        (FileHeader(1, 1, "L", "Raw"), []),
        (HEADER, [("MEND", b"")]),
        (HEADER, [("MHDR", b"")]),
        (HEADER, [("RAW1", b"")]),
        (HEADER, [("eXIf", b"a"), ("eXIf", b"b")]),
        (HEADER, [("MODL", b"junk")]),
    ],
)
def test_build_refuses_invalid_files(header, chunks):
    with pytest.raises(ValueError):
        c.build(header, chunks)


def test_chunk_criticality():
    assert c.is_critical("MHDR") and c.is_critical("RAWD") and not c.is_critical("eXIf")


# ---------------------------------------------------------------- property tests

chunk_types = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=4, max_size=4).filter(
    lambda t: t not in c.CONTAINER_CHUNKS
)
headers = st.builds(
    FileHeader,
    width=st.integers(1, c.MAX_DIMENSION),
    height=st.integers(1, c.MAX_DIMENSION),
    mode=st.sampled_from(sorted(c.MODE_CODES)),
    method=st.from_regex(c.METHOD_NAME_RE, fullmatch=True),
    method_version=st.integers(0, 0xFFFF),
)
model_chunks = st.builds(
    lambda model_id, sha: ("MODL", c.build_model_payload(model_id, sha)),
    st.from_regex(c.MODEL_ID_RE, fullmatch=True),
    st.binary(min_size=32, max_size=32),
)
metadata_chunks = st.tuples(st.sampled_from(["eXIf", "iCCP", "xMPt"]), st.binary(min_size=1, max_size=32))
chunk_lists = st.builds(
    lambda container_chunks, method_chunks: list({t: (t, d) for t, d in container_chunks}.values()) + method_chunks,
    st.lists(st.one_of(model_chunks, metadata_chunks), max_size=4),
    st.lists(st.tuples(chunk_types, st.binary(max_size=64)), max_size=6),
)


@settings(max_examples=60)
@given(headers, chunk_lists)
def test_valid_chunk_sequences_round_trip(header, chunks):
    data = c.build(header, chunks)
    parsed = c.parse(data)
    assert parsed.header == header
    assert [(ch.type, ch.data) for ch in parsed.chunks] == chunks
    assert c.build(parsed.header, parsed.chunks) == data


def _parse_or_clean_error(data: bytes, allow_truncated: bool = False) -> None:
    try:
        c.parse(data, allow_truncated=allow_truncated)
    except (SyntaxError, ContainerError) as exc:
        assert type(exc) in (SyntaxError, ContainerError)  # never construct's or struct's errors
        assert str(exc)


@settings(max_examples=100)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_bytes_raise_only_clean_errors(data, allow_truncated):
    _parse_or_clean_error(data, allow_truncated)
    _parse_or_clean_error(c.SIGNATURE + data, allow_truncated)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(headers, chunk_lists, st.data())
def test_mutated_files_raise_only_clean_errors(header, chunks, data):
    good = bytearray(c.build(header, chunks))
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "refresh_crc"]))
    pos = data.draw(st.integers(0, len(good) - 1))
    if kind == "flip":
        good[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del good[pos:]
    elif kind == "insert":
        good[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    else:  # change a header byte and fix its CRC, to reach the field checks behind the CRC
        offset = data.draw(st.integers(0, 16))
        payload = bytearray(c.build_header_payload(header))
        payload[offset % len(payload)] ^= data.draw(st.integers(1, 255))
        good = bytearray(c.SIGNATURE + chunk_bytes(b"MHDR", bytes(payload)) + bytes(good[8 + 12 + len(payload):]))
    _parse_or_clean_error(bytes(good))
    _parse_or_clean_error(bytes(good), allow_truncated=True)
