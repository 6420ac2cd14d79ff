"""Fuzzing every decoder path: damaged and random files raise only the errors Pillow users expect.

Image.open(f).load() on any bytes must either decode or raise SyntaxError, OSError,
ValueError or Pillow's DecompressionBombError (the set Pillow's own fuzzers accept),
within a bounded time, and the resource-limit files must be refused without large
allocations. Seeds are the committed fixtures (a few hundred bytes each).
"""
from __future__ import annotations

import io
import signal
import struct
import time
import tracemalloc
import warnings
import zlib
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

import mlimg  # noqa: F401
from mlimg import codecs, container, fixturegen
from mlimg.fixture_defects import SIGNATURE, frame, mhdr, raw_file

ALLOWED = (SyntaxError, OSError, ValueError, Image.DecompressionBombError)
TIME_LIMIT_S = 10.0  # per input at least; generous because the CI machine is shared
SLOWDOWN = 5  # a damaged input may take this many times the slowest valid seed's decode
MEMORY_LIMIT = 64 << 20  # peak bytes traced while refusing a resource-limit file
# The configurable pixel bound of spec/MLIMG.md section 8 (Pillow's bomb guard), lowered so that a
# mutated header claiming millions of pixels is refused instead of decoded: entropy-coded methods
# legitimately spend time proportional to the claimed size, and the time bound is there to catch
# hangs, not that. (Error above 2 * 2^18 pixels, the guard's usual factor.)
FUZZ_MAX_PIXELS = 1 << 18

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


_time_limit = [TIME_LIMIT_S]  # raised by _warm_decoders for slow (learned) decoders


class Hang(BaseException):
    """Raised by SIGALRM: not an Exception, so no decoder can swallow it."""


@contextmanager
def _alarm(seconds: int):
    def on_alarm(signum, frame):
        raise Hang(f"decoding took over {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def outcome(data: bytes) -> BaseException | None:
    """Open and load; return the allowed exception (or None), fail on anything else or on slowness."""
    start = time.perf_counter()
    try:
        with _alarm(int(_time_limit[0]) * 3), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=["MLIMG"]) as im:
                im.load()
    except ALLOWED as exc:
        result = exc
    except Exception as exc:  # noqa: BLE001 - the finding
        raise AssertionError(f"{type(exc).__name__}: {exc} for input {data[:80]!r}... ({len(data)} bytes)") from exc
    else:
        result = None
    elapsed = time.perf_counter() - start
    assert elapsed < _time_limit[0], f"{elapsed:.1f} s (limit {_time_limit[0]:.1f} s) for input {data[:80]!r}..."
    return result


def _seed_cases() -> dict[str, fixturegen.ValidCase]:
    """Per method its 17x13 fixture case in the first mode, plus RGBA (alpha chunks) and I;16 where supported.

    Encoded afresh from the generator's table rather than read from fixtures/, so a stale
    committed fixture fails test_conformance, not these tests. Learned methods without
    installed weights cannot encode and are left out.
    """
    found = {}
    for method in codecs.names():
        if codecs.get(method).needs_model and not fixturegen.installed_models(method):
            continue
        for case in fixturegen.cases_for(method):
            first = not any(name.startswith(method + "-") for name in found)
            more_modes = ("RGBA", "I;16") if not codecs.get(method).needs_model else ()  # learned: slow
            if case.size == (17, 13) and (first or case.mode in more_modes):
                found[case.name] = case
    return found


SEED_CASES = _seed_cases()
SEEDS = sorted(SEED_CASES)


class _Seeds(dict):
    """name -> encoded bytes, encoded on first use."""

    def __missing__(self, name):
        self[name] = fixturegen.build_valid(SEED_CASES[name])["input.mlimg"]
        return self[name]


SMALL = _Seeds()


@pytest.fixture(scope="module", autouse=True)
def _warm_decoders():
    """Decode each seed once so imports and JIT compilation do not count against the time bound,
    then time a second decode: the bound is relative to the slowest method on this machine."""
    slowest = 0.0
    for name in SEEDS:
        for _ in range(2):
            start = time.perf_counter()
            with Image.open(io.BytesIO(SMALL[name])) as im:
                im.load()
        slowest = max(slowest, time.perf_counter() - start)
    _time_limit[0] = max(TIME_LIMIT_S, SLOWDOWN * slowest)


@pytest.fixture(autouse=True)
def _pixel_bound(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", FUZZ_MAX_PIXELS)


def _rebuild(parsed: container.MlimgFile, header: container.FileHeader | None = None, chunks=None) -> bytes:
    """A file from a parsed one, CRCs recomputed (framing written by hand: duplicates allowed)."""
    header = header or parsed.header
    payload = container.build_header_payload(header)
    chunks = parsed.chunks if chunks is None else chunks
    parts = [SIGNATURE, frame(b"MHDR", payload)]
    parts += [frame(c.type.encode(), c.data) for c in chunks]
    return b"".join(parts + [frame(b"MEND", b"")])


def test_seeds_cover_every_method_that_can_encode():
    methods = {name.split("-")[0] for name in SEEDS}
    learned_without_weights = {n for n in codecs.names() if codecs.get(n).needs_model and not fixturegen.installed_models(n)}
    assert methods == set(codecs.names()) - learned_without_weights and "raw" in methods


def test_seeds_decode():
    for name in SEEDS:
        assert outcome(SMALL[name]) is None, name


# ---------------------------------------------------------------- exhaustive mutations of the small fixtures


@pytest.mark.parametrize("name", SEEDS)
@pytest.mark.parametrize("load_truncated", [False, True])
def test_truncation_at_every_byte(name, load_truncated, monkeypatch):
    """With LOAD_TRUNCATED_IMAGES the codecs get the complete chunks before the cut and must cope."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", load_truncated)
    data = SMALL[name]
    cuts = range(len(data))
    if load_truncated and codecs.get(name.split("-")[0]).needs_model:
        cuts = sorted({len(data) * i // 16 for i in range(16)})  # each partial decode runs the network
    for cut in cuts:
        error = outcome(data[:cut])
        assert error is not None or load_truncated, f"{name} cut at {cut} decoded"


@pytest.mark.parametrize("name", SEEDS)
def test_every_bit_flip_of_the_header(name):
    """Each flip in the first 40 bytes: once as is (CRC catches it), once with the CRC recomputed."""
    data = SMALL[name]
    head_len = 8 + 12 + struct.unpack(">I", data[8:12])[0]
    for bit in range(min(40, len(data)) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert outcome(bytes(flipped)) is not None or bit // 8 >= head_len, f"{name} bit {bit} accepted"
        if 16 <= bit // 8 < head_len - 4:  # inside the MHDR payload: make the CRC agree
            crc = zlib.crc32(bytes(flipped[12 : head_len - 4]))
            flipped[head_len - 4 : head_len] = crc.to_bytes(4, "big")
            outcome(bytes(flipped))


# ---------------------------------------------------------------- hypothesis: random damage


@FUZZ
@given(name=st.sampled_from(SEEDS), data=st.data())
def test_random_byte_splices(name, data):
    seed = SMALL[name]
    start = data.draw(st.integers(0, len(seed)))
    stop = data.draw(st.integers(start, min(len(seed), start + 64)))
    insert = data.draw(st.binary(max_size=64))
    outcome(seed[:start] + insert + seed[stop:])


@FUZZ
@given(name=st.sampled_from(SEEDS), data=st.data())
def test_mutated_method_payloads_with_valid_crcs(name, data):
    """The deep path: framing intact, a method chunk's payload damaged, so the codec sees it."""
    parsed = container.parse(SMALL[name])
    chunks = list(parsed.chunks)
    index = data.draw(st.integers(0, len(chunks) - 1))
    payload = bytearray(chunks[index].data)
    how = data.draw(st.sampled_from(["flip", "set", "cut", "extend", "empty", "drop-chunk", "repeat-chunk"]))
    if how == "flip" and payload:
        for _ in range(data.draw(st.integers(1, 8))):
            pos = data.draw(st.integers(0, len(payload) - 1))
            payload[pos] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "set" and payload:
        pos = data.draw(st.integers(0, len(payload) - 1))
        payload[pos] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
    elif how == "cut":
        del payload[data.draw(st.integers(0, len(payload))) :]
    elif how == "extend":
        payload += data.draw(st.binary(min_size=1, max_size=32))
    elif how == "empty":
        payload = bytearray()
    if how == "drop-chunk":
        del chunks[index]
    elif how == "repeat-chunk":
        chunks.insert(index, chunks[index])
    else:
        chunks[index] = container.RawChunk(chunks[index].type, bytes(payload))
    outcome(_rebuild(parsed, chunks=chunks))


_KNOWN_TYPES = sorted({spec.type for codec in codecs.all_codecs() for spec in codec.chunk_specs}
                      | set(container.CONTAINER_CHUNKS))
_chunk_type = st.one_of(st.sampled_from([t.encode() for t in _KNOWN_TYPES]), st.binary(min_size=4, max_size=4))


@FUZZ
@given(
    method=st.sampled_from(codecs.names() + ["nosuch"]),
    mode=st.sampled_from([1, 2, 3, 4, 0, 5]),
    width=st.integers(0, 40),
    height=st.integers(0, 40),
    chunks=st.lists(st.tuples(_chunk_type, st.binary(max_size=80)), max_size=8),
    end=st.booleans(),
)
def test_random_chunk_sequences(method, mode, width, height, chunks, end):
    body = b"".join(frame(chunk_type, payload) for chunk_type, payload in chunks)
    data = SIGNATURE + frame(b"MHDR", mhdr(width, height, mode, method=method.encode())) + body
    outcome(data + (frame(b"MEND", b"") if end else b""))


# ---------------------------------------------------------------- resource limits


def _peak_while(data: bytes, monkeypatch=None) -> tuple[BaseException | None, int]:
    tracemalloc.start()
    try:
        error = outcome(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return error, peak


@pytest.mark.parametrize("name", SEEDS)
def test_header_claiming_2p31_pixels_is_refused_early(name):
    parsed = container.parse(SMALL[name])
    h = parsed.header
    huge = container.FileHeader(1 << 16, 1 << 15, h.mode, h.method, h.method_version)
    error, peak = _peak_while(_rebuild(parsed, header=huge))
    assert isinstance(error, Image.DecompressionBombError)
    assert peak < MEMORY_LIMIT, f"{peak / 2**20:.0f} MiB"


def test_header_claiming_2p31_pixels_without_the_bomb_guard(monkeypatch):
    """With Image.MAX_IMAGE_PIXELS = None the raw decoder still checks the payload before allocating."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    error, peak = _peak_while(raw_file(header=mhdr(width=1 << 16, height=1 << 15)))
    assert isinstance(error, OSError) and "RAWD" in str(error)
    assert peak < MEMORY_LIMIT, f"{peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("length", [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0x10000000])
@pytest.mark.parametrize("chunk_type", [b"RAWD", b"zFUT", b"eXIf"])
def test_chunk_claiming_gigabytes_is_refused_without_allocating(length, chunk_type):
    data = SIGNATURE + frame(b"MHDR", mhdr()) + frame(chunk_type, b"\x00" * 60, length=length) + frame(b"MEND", b"")
    error, peak = _peak_while(data)
    assert isinstance(error, OSError)
    assert peak < MEMORY_LIMIT, f"{peak / 2**20:.0f} MiB"


def test_mhdr_claiming_gigabytes_is_refused_without_allocating():
    data = SIGNATURE + frame(b"MHDR", mhdr(), length=0x7FFFFFFF) + frame(b"MEND", b"")
    error, peak = _peak_while(data)
    assert isinstance(error, OSError) and "4096" in str(error)
    assert peak < 1 << 20


def test_thousands_of_repeated_ancillary_chunks_are_skipped_quickly():
    # Parsing costs about 0.25 ms per chunk (construct), so 3000 keep this test short; the time
    # bound in outcome() catches anything worse than linear.
    data = raw_file(frame(b"zFUT", b"x") * 3000)
    error, peak = _peak_while(data)
    assert error is None
    assert peak < MEMORY_LIMIT, f"{peak / 2**20:.0f} MiB"


def test_thousands_of_repeated_metadata_chunks_are_refused():
    error, peak = _peak_while(raw_file(frame(b"eXIf", b"II*\x00") * 20000))
    assert isinstance(error, OSError) and "only once" in str(error)
    assert peak < MEMORY_LIMIT


def test_thousands_of_split_method_chunks_decode():
    pixels = bytes(range(256)) * 12 + bytes(12)  # a 257x12 L image, one byte per RAWD chunk
    pieces = b"".join(frame(b"RAWD", pixels[i : i + 1]) for i in range(len(pixels)))
    data = SIGNATURE + frame(b"MHDR", mhdr(257, 12, 1)) + pieces + frame(b"MEND", b"")
    error, peak = _peak_while(data)
    assert error is None
    assert peak < MEMORY_LIMIT
