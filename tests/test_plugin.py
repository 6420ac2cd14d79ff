"""The Pillow plugin, in the style of Pillow's Tests/test_file_*.py."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from conftest import MODES, random_image, random_pixels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, UnidentifiedImageError

import mlimg
from mlimg import codecs, container, plugin
from mlimg.codecs.base import ChunkSpec, Codec, CodecError, Encoded, Option

SHA = bytes(range(32))


def save_bytes(im: Image.Image, **params) -> bytes:
    # Plugin tests check exact pixels, so they use the raw method unless told otherwise.
    if "lossless" not in params:
        params.setdefault("method", "raw")
    buf = io.BytesIO()
    im.save(buf, format="MLIMG", **params)
    return buf.getvalue()


def reopen(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


# ---------------------------------------------------------------- fake methods for plugin paths raw cannot reach


def _quality(value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValueError(value)
    return value


class RowsCodec(Codec):
    """One critical chunk per row, so a truncated file can be decoded partially."""

    name = "fakerows"
    modes = ("L",)
    chunk_specs = (ChunkSpec("ROWS", "one row of L pixels"),)
    options = {"quality": Option(50, _quality, "1..100")}

    def __init__(self):
        self.calls = []

    def encode(self, pixels, mode, opts):
        padding = b"\0" * opts["quality"] * 4  # bigger files for higher quality
        rows = [("ROWS", row.tobytes()) for row in pixels]
        return Encoded(chunks=rows + [("ROWS", padding)], info={"quality_used": opts["quality"]})

    def decode(self, header, chunks, iterations=1, bug=None, truncated=False):
        self.calls.append(dict(iterations=iterations, bug=bug, truncated=truncated, chunks=[t for t, _ in chunks]))
        if bug == "index":
            return [][0]
        if bug == "shape":
            return np.zeros((1, 1), np.uint8)
        rows = [np.frombuffer(d, np.uint8) for _, d in chunks[: header.height] if len(d) == header.width]
        if len(rows) < header.height and not truncated:
            raise CodecError("chunk 'ROWS': missing rows")
        out = np.zeros((header.height, header.width), np.uint8)
        if rows:
            out[: len(rows)] = np.stack(rows)
        return out

    def describe(self, header, chunks):
        return {"rows": len(chunks)}


class ModelCodec(Codec):
    """A 'learned' method: needs a MODL chunk and checks the digest."""

    name = "fakemodel"
    modes = ("L",)
    chunk_specs = (ChunkSpec("FMOD", "L pixels"),)
    needs_model = True

    def encode(self, pixels, mode, opts):
        return Encoded(chunks=[("FMOD", pixels.tobytes())], model=("fake-weights-v1", SHA))

    def decode(self, header, chunks, model=None):
        if model != ("fake-weights-v1", SHA):
            raise CodecError(f"model {model[0]!r} has different weights")
        return np.frombuffer(chunks[0][1], np.uint8).reshape(header.height, header.width)


@pytest.fixture
def fakes(monkeypatch):
    made = {"rows": RowsCodec(), "model": ModelCodec()}
    for codec in made.values():
        monkeypatch.setitem(codecs._REGISTRY, codec.name, "tests.fake:Unused")
        monkeypatch.setitem(codecs._cache, codec.name, codec)
    return made


def chunk(chunk_type: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + chunk_type + data + struct.pack(">I", zlib.crc32(chunk_type + data))


def raw_file(*extra: tuple[str, bytes], width=2, height=2, mode="L", method="raw", version=1) -> bytes:
    header = container.FileHeader(width, height, mode, method, version)
    pixels = ("RAWD", bytes(width * height * {"L": 1, "RGB": 3, "RGBA": 4, "I;16": 2}[mode]))
    return container.build(header, [*extra, pixels])


# ---------------------------------------------------------------- registration and laziness


def test_registration():
    assert Image.registered_extensions()[".mlimg"] == "MLIMG"
    assert Image.MIME["MLIMG"] == "image/x-mlimg"
    mlimg.register()
    mlimg.register()
    assert Image.ID.count("MLIMG") == 1
    assert isinstance(mlimg.__version__, str)


def test_import_is_light():
    code = "import sys, mlimg; print(sorted(m for m in ('torch', 'sklearn', 'numba', 'constriction') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_open_is_lazy(fakes):
    data = save_bytes(random_image("L", 4, 3), method="fakerows", quality=3)
    im = reopen(data)
    assert (im.format, im.mode, im.size) == ("MLIMG", "L", (4, 3))
    assert im.get_format_mimetype() == "image/x-mlimg"
    assert fakes["rows"].calls == []
    im.load()
    assert len(fakes["rows"].calls) == 1


# ---------------------------------------------------------------- round trips


def test_round_trip_each_mode(mode):
    im = random_image(mode)
    with reopen(save_bytes(im, method="raw")) as back:
        assert back.mode == mode and back.size == im.size
        assert np.array_equal(np.asarray(back), random_pixels(mode))


def test_save_by_extension_and_default_method(tmp_path):
    path = tmp_path / "a.mlimg"
    random_image("RGB").save(path)
    with Image.open(path) as im:
        assert im.format == "MLIMG" and im.info["method"] == plugin.DEFAULT_METHOD
        assert np.asarray(im).shape == random_pixels("RGB").shape
        assert im.fp is None  # Pillow closed the file after loading


def test_corrupt_payload_fails_before_pixel_memory_is_allocated():
    header = container.FileHeader(4000, 4000, "RGBA", "raw")
    with reopen(container.build(header, [("RAWD", b"tiny")])) as im:
        with pytest.raises(OSError, match="RAWD"):
            im.load()
        assert im._im is None


def test_one_pixel_image():
    im = Image.new("RGBA", (1, 1), (1, 2, 3, 4))
    with reopen(save_bytes(im)) as back:
        assert back.getpixel((0, 0)) == (1, 2, 3, 4)


@pytest.mark.parametrize(
    "make, expected_mode",
    [
        (lambda: Image.new("1", (3, 2), 1), "L"),
        (lambda: Image.new("P", (3, 2), 5), "RGB"),
        (lambda: Image.new("LA", (3, 2), (9, 8)), "RGBA"),
        (lambda: Image.new("I", (3, 2), 40000), "I;16"),
    ],
)
def test_mode_conversion(make, expected_mode):
    im = make()
    with reopen(save_bytes(im)) as back:
        assert back.mode == expected_mode
        assert np.array_equal(np.asarray(back), np.asarray(im.convert(expected_mode) if im.mode != "I" else im))


def test_palette_with_transparency_becomes_rgba():
    im = Image.new("P", (2, 2), 0)
    im.info["transparency"] = 0
    with reopen(save_bytes(im)) as back:
        assert back.mode == "RGBA" and back.getpixel((0, 0))[3] == 0


def test_unsupported_mode_lists_valid_modes():
    with pytest.raises(ValueError, match="supported modes: L, RGB, RGBA, I;16"):
        save_bytes(Image.new("CMYK", (2, 2)))
    with pytest.raises(ValueError, match="outside 0..65535"):
        save_bytes(Image.new("I", (2, 2), -1))


def test_empty_image_is_refused():
    with pytest.raises(ValueError, match="image size 0x3 is outside"):
        save_bytes(Image.new("L", (0, 3)))


def test_codec_writing_unregistered_chunks_is_caught(fakes, monkeypatch):
    monkeypatch.setattr(RowsCodec, "chunk_specs", (ChunkSpec("ROWZ", "other"),))
    with pytest.raises(RuntimeError, match="ROWS missing from its chunk_specs"):
        save_bytes(random_image("L"), method="fakerows")


def test_unknown_method_and_options_raise_value_error():
    im = random_image("L")
    with pytest.raises(ValueError, match="unknown method 'nope'; valid methods: .*raw"):
        save_bytes(im, method="nope")
    with pytest.raises(ValueError, match="unknown option.*colours.*valid options"):
        save_bytes(im, method="raw", colours=3)


# ---------------------------------------------------------------- info and metadata


def test_info_after_open():
    with reopen(save_bytes(random_image("RGB"))) as im:
        assert im.info["method"] == "raw"
        assert im.info["method_version"] == 1
        assert im.info["format_version"] == "1.0"
        assert im.info["chunks"] == [("MHDR", 17), ("RAWD", 105), ("MEND", 0)]
        assert im.info["raw_chunks"] == 1  # the codec's describe()


def test_metadata_round_trip():
    exif = Image.Exif()
    exif[0x010E] = "a description"
    icc = b"fake icc profile \x00\x01"
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/">ü</x:xmpmeta>'
    data = save_bytes(random_image("RGB"), exif=exif, icc_profile=icc, xmp=xmp)
    with reopen(data) as im:
        assert im.info["exif"] == exif.tobytes()
        assert im.getexif()[0x010E] == "a description"
        assert im.info["icc_profile"] == icc
        assert im.info["xmp"] == xmp.encode("utf-8")
        assert [t for t, _ in im.info["chunks"]] == ["MHDR", "eXIf", "iCCP", "xMPt", "RAWD", "MEND"]
        # Re-saving keeps the ICC profile (like PNG); EXIF bytes given as bytes are copied unchanged.
        again = save_bytes(im, exif=im.info["exif"])
    with reopen(again) as im2:
        assert im2.info["icc_profile"] == icc and im2.info["exif"] == exif.tobytes()
        assert "xmp" not in im2.info


def test_metadata_must_be_bytes():
    with pytest.raises(ValueError, match="icc_profile= must be bytes"):
        save_bytes(random_image("L"), icc_profile=42)


# ---------------------------------------------------------------- errors


def test_not_mlimg_is_unidentified(tmp_path):
    path = tmp_path / "a.png"
    random_image("RGB").save(path)
    with pytest.raises(UnidentifiedImageError):
        Image.open(path, formats=["MLIMG"])
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(b"\x8bMLI\n\x1a\n" + b"\0" * 40))  # line endings converted


def test_corrupt_file_names_chunk():
    data = bytearray(save_bytes(random_image("L")))
    data[40] ^= 1  # inside RAWD's payload
    with pytest.raises(OSError, match="chunk 'RAWD' at offset 37: CRC-32 mismatch"):
        reopen(bytes(data))


def test_newer_major_version_refused():
    data = bytearray(save_bytes(random_image("L")))
    payload = bytes([2]) + bytes(data[17:33])
    fixed = data[:8] + chunk(b"MHDR", payload) + data[37:]
    with pytest.raises(OSError, match=r"format version 2\.0 is newer than this decoder supports \(1\.x\)"):
        reopen(bytes(fixed))


@pytest.mark.parametrize("cut", [10, 30, 40, -12, -5])
def test_truncated_file_raises_oserror(cut):
    data = save_bytes(random_image("RGB", 4, 4))
    with pytest.raises(OSError, match="truncated|ends"):
        with reopen(data[:cut]) as im:
            im.load()


def test_load_truncated_images_passes_complete_chunks(fakes, monkeypatch):
    data = save_bytes(Image.new("L", (3, 4), 7), method="fakerows", quality=1)
    cut = data[: len(data) - 12 - (4 + 12) - (3 + 12) - 2]  # MEND, padding, row 3 gone; row 2 partial
    with reopen(cut) as im:
        assert "truncated" in im.info
        with pytest.raises(OSError, match="image file is truncated"):
            im.load()
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with reopen(cut) as im:
        im.load()
        assert fakes["rows"].calls[-1]["truncated"] is True
        assert fakes["rows"].calls[-1]["chunks"] == ["ROWS", "ROWS"]
        assert np.asarray(im)[:2].tolist() == [[7, 7, 7]] * 2 and not np.asarray(im)[2:].any()
    with reopen(raw_file()[:-14]) as im:  # raw cannot decode partially: a clear CodecError
        with pytest.raises(OSError, match="RAWD.*truncated"):
            im.load()


def test_unknown_critical_chunk_is_refused():
    with pytest.raises(OSError, match="chunk 'ZZZZ' at offset 37: unknown critical chunk"):
        reopen(raw_file(("ZZZZ", b"")))


def test_unknown_ancillary_chunk_is_skipped():
    with reopen(raw_file(("zzZZ", b"abc"))) as im:
        im.load()
        assert ("zzZZ", 3) in im.info["chunks"]
        assert im.info["skipped_chunks"] == ["zzZZ"]


def test_unknown_method_and_newer_method_version():
    with pytest.raises(OSError, match="unknown method 'nosuch' in MHDR"):
        reopen(raw_file(method="nosuch"))
    with pytest.raises(OSError, match="method 'raw' version 9 is newer than this decoder supports \\(1\\)"):
        reopen(raw_file(version=9))


def test_raw_payload_of_wrong_size():
    header = container.FileHeader(2, 2, "L", "raw")
    with reopen(container.build(header, [("RAWD", b"abc")])) as im:
        with pytest.raises(OSError, match="chunk 'RAWD': 3 pixel bytes, expected 4"):
            im.load()


def test_decompression_bomb_refused_before_allocation(monkeypatch):
    header = container.FileHeader(1 << 24, 1 << 24, "RGBA", "raw")
    data = container.build(header, [("RAWD", b"")])
    with pytest.raises(Image.DecompressionBombError):
        reopen(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5)
    with pytest.warns(Image.DecompressionBombWarning):
        reopen(save_bytes(random_image("L", 3, 2)))


# ---------------------------------------------------------------- models, decode options, codec misbehaviour


def test_model_chunk_is_written_and_handed_to_codec(fakes):
    data = save_bytes(random_image("L"), method="fakemodel")
    with reopen(data) as im:
        assert im.info["model_id"] == "fake-weights-v1"
        assert ("MODL", 1 + 15 + 32) in im.info["chunks"]
        assert np.array_equal(np.asarray(im), random_pixels("L"))
    other = data.replace(SHA, bytes(32))
    other = container.build(*_parsed(other))  # fix the CRC after swapping the digest
    with reopen(other) as im:
        with pytest.raises(OSError, match="different weights"):
            im.load()


def _parsed(data: bytes):
    # The MODL CRC no longer matches after the digest swap; rebuild from the raw chunk bytes.
    header, consumed = container.read_header(io.BytesIO(data))
    chunks, pos = [], consumed
    while data[pos + 4 : pos + 8] != b"MEND":
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunks.append((data[pos + 4 : pos + 8].decode(), data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return header, chunks


def test_model_chunk_required_and_forbidden(fakes):
    header = container.FileHeader(2, 2, "L", "fakemodel")
    with pytest.raises(OSError, match="needs a MODL chunk"):
        reopen(container.build(header, [("FMOD", bytes(4))]))
    with pytest.raises(OSError, match="'MODL': method 'raw' uses no model"):
        reopen(raw_file(("MODL", container.build_model_payload("x", SHA))))


def test_decode_options_reach_the_codec(fakes):
    data = save_bytes(random_image("L"), method="fakerows")
    with reopen(data) as im:
        im.decode_options["iterations"] = 4
        im.load()
    assert fakes["rows"].calls[-1]["iterations"] == 4
    with reopen(data) as im:
        im.decode_options = {"realism": 0.5}
        with pytest.raises(ValueError, match="unknown decode option.*realism.*valid decode options: iterations, bug"):
            im.load()
    with reopen(data) as im:
        im.decode_options = {"model": ("x", SHA)}
        with pytest.raises(ValueError, match="set by the plugin"):
            im.load()


@pytest.mark.parametrize("bug, message", [("index", "IndexError"), ("shape", "decoded shape")])
def test_codec_misbehaviour_becomes_oserror(fakes, bug, message):
    with reopen(save_bytes(random_image("L"), method="fakerows")) as im:
        im.decode_options["bug"] = bug
        with pytest.raises(OSError, match=message):
            im.load()


# ---------------------------------------------------------------- rate control


def test_max_bytes_picks_highest_quality_that_fits(fakes):
    im = random_image("L", 4, 2)
    sizes = {q: len(save_bytes(im, method="fakerows", quality=q)) for q in (1, 37, 38, 100)}
    data = save_bytes(im, method="fakerows", max_bytes=sizes[37])
    assert len(data) == sizes[37]
    assert im.info["mlimg_save"]["quality"] == 37
    data = save_bytes(im, method="fakerows", target_bpp=8 * sizes[38] / 8)  # 8 pixels
    assert len(data) == sizes[38]
    data = save_bytes(im, method="fakerows", max_bytes=10)
    assert len(data) == sizes[1] and "even quality 1" in im.info["mlimg_save"]["rate_note"]


def test_rate_control_errors(fakes):
    im = random_image("L")
    with pytest.raises(ValueError, match="not both"):
        save_bytes(im, method="fakerows", max_bytes=100, target_bpp=1.0)
    with pytest.raises(ValueError, match="has no quality option"):
        save_bytes(im, method="raw", max_bytes=100)
    with pytest.raises(ValueError, match="cannot be combined"):
        save_bytes(im, method="fakerows", max_bytes=100, quality=5)
    with pytest.raises(ValueError, match="positive"):
        save_bytes(im, method="fakerows", target_bpp=-1)


# ---------------------------------------------------------------- property tests

images = st.sampled_from(MODES).flatmap(
    lambda mode: st.tuples(st.just(mode), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**32 - 1))
)


@settings(max_examples=30)
@given(images)
def test_any_small_image_round_trips(spec):
    mode, width, height, seed = spec
    pixels = random_pixels(mode, width, height, seed)
    with reopen(save_bytes(Image.fromarray(pixels))) as im:
        assert np.array_equal(np.asarray(im), pixels)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(MODES), st.data())
def test_mutated_files_raise_only_oserror_or_valueerror(mode, data):
    good = bytearray(save_bytes(random_image(mode, 3, 2), exif=b"II*\0abc"))
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]))
    pos = data.draw(st.integers(0, len(good) - 1))
    if kind == "flip":
        good[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del good[pos:]
    else:
        good[pos:pos] = data.draw(st.binary(min_size=1, max_size=6))
    try:
        with reopen(bytes(good)) as im:
            im.load()
    except (OSError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        assert str(exc)


def test_lossless_shortcut_round_trips_exactly():
    im = random_image("RGB")
    with reopen(save_bytes(im, lossless=True)) as back:
        assert back.info["method"] == "lossless"
        assert np.array_equal(np.asarray(back), random_pixels("RGB"))


def test_lossless_shortcut_conflicting_method_is_an_error():
    with pytest.raises(ValueError, match="conflicts"):
        save_bytes(random_image("RGB"), lossless=True, method="pca")
