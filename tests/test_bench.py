"""`mlimg bench` end to end on tiny synthetic images, plus its building blocks."""
import argparse
import io
import json
import math
import zlib

import numpy as np
import pytest
from PIL import Image

import mlimg  # noqa: F401 - registers the MLIMG plugin
from mlimg import bench, codecs
from mlimg.bench import aggregate, images, measure, published, report, subjects
from mlimg.bench.suite import Settings, choose_points, run
from mlimg.codecs.base import ChunkSpec, Codec, CodecError, Encoded, Option


def _quality(value):
    value = int(value)
    if not 1 <= value <= 100:
        raise ValueError(value)
    return value


class FakeQuantCodec(Codec):
    """A lossy test method: uniform quantisation (step from quality) + zlib."""

    name = "fakeq"
    modes = ("RGB",)
    chunk_specs = (ChunkSpec("FKQd", "step u8 + zlib of quantised bytes"),)
    options = {"quality": Option(50, _quality, "1..100"), "coarser": Option(0, int, "an integer")}
    bench_points = ({"quality": 20}, {"quality": 90})

    def encode(self, pixels, mode, opts):
        step = max(1, (101 - opts["quality"]) // 3) + opts["coarser"]
        q = (pixels // step).astype(np.uint8)
        return Encoded([("FKQd", bytes([step]) + zlib.compress(q.tobytes(), 9))])

    def decode(self, header, chunks, **_):
        data = chunks[0][1]
        step = data[0]
        q = np.frombuffer(zlib.decompress(data[1:]), np.uint8).reshape(header.height, header.width, 3)
        return np.clip(q.astype(np.int32) * step + step // 2, 0, 255).astype(np.uint8)

    def bench_report(self, imgs):
        shapes = {np.asarray(im).shape for im in imgs}
        return f"fake report over {len(imgs)} images of shapes {sorted(shapes)}"


class FakeLosslessCodec(Codec):
    name = "fakell"
    modes = ("RGB",)
    chunk_specs = (ChunkSpec("FKLd", "zlib of the pixel bytes"),)
    options = {}
    lossless = True
    bench_points = ({},)

    def encode(self, pixels, mode, opts):
        return Encoded([("FKLd", zlib.compress(pixels.tobytes(), 9))])

    def decode(self, header, chunks, **_):
        raw = zlib.decompress(chunks[0][1])
        return np.frombuffer(raw, np.uint8).reshape(header.height, header.width, 3)


class BrokenCodec(FakeQuantCodec):
    name = "broken"

    def encode(self, pixels, mode, opts):
        raise RuntimeError("deliberately broken")


@pytest.fixture
def fake_methods(monkeypatch):
    for cls in (FakeQuantCodec, FakeLosslessCodec, BrokenCodec):
        monkeypatch.setitem(codecs._REGISTRY, cls.name, f"{__name__}:{cls.__name__}")
        monkeypatch.setitem(codecs._cache, cls.name, cls())
    monkeypatch.setattr(subjects, "_cache", {})


def _tiny(seed, h=40, w=48):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 5, y * 6, (x + y) * 2], axis=-1) + rng.integers(0, 20, (h, w, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(_tiny(i), "RGB").save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def published_dir(tmp_path):
    folder = tmp_path / "published"
    folder.mkdir()
    bpp = [0.1, 0.3, 0.6, 1.2, 2.4, 4.8]
    for stem, offset in (("vtm", 0.0), ("bpg_444_x265_ycbcr", -1.0)):
        psnr = [26 + offset + 4 * math.log2(b / 0.1) for b in bpp]
        data = {"name": stem, "results": {"bpp": bpp, "psnr-rgb": psnr, "ms-ssim-db-rgb": [10 + p / 4 for p in psnr]}}
        (folder / f"{stem}.json").write_text(json.dumps(data))
    return folder


def _settings(tmp_path, image_dir, published_dir, **kw):
    defaults = dict(images=str(image_dir), out=str(tmp_path / "out"), published=str(published_dir),
                    qualities=[20, 90], progress=False, plots=False)
    defaults.update(kw)
    return Settings(**defaults)


def test_bench_end_to_end(tmp_path, image_dir, published_dir, fake_methods):
    settings = _settings(tmp_path, image_dir, published_dir, methods=["fakeq", "broken"], anchors=["jpeg", "webp"],
                         plots=True)
    result = run(settings)
    out = tmp_path / "out"
    for name in ("fakeq", "broken", "jpeg", "webp", "summary"):
        assert (out / (f"{name}.json" if name != "summary" else "summary.md")).exists(), name

    fake = json.loads((out / "fakeq.json").read_text())
    res = fake["results"]
    assert fake["name"] == "fakeq" and len(res["bpp"]) == 2
    assert res["bpp"][0] < res["bpp"][1] and res["psnr-rgb"][0] < res["psnr-rgb"][1]
    assert res["ms-ssim-rgb"] == [None, None]  # 40x48 images are too small for 5-scale MS-SSIM
    jpeg = json.loads((out / "jpeg.json").read_text())["results"]
    assert 0 < jpeg["bpp"][0] < jpeg["bpp"][1] and 20 < jpeg["psnr-rgb"][0] < jpeg["psnr-rgb"][1] < 60

    # The broken method became error rows and an empty curve, not a crash.
    broken = json.loads((out / "broken.json").read_text())
    assert broken["results"]["bpp"] == [] and broken["meta"]["errors"] == 4

    summary = (out / "summary.md").read_text()
    assert summary == result.summary
    for text in ("## BD-rate / BD-PSNR", "| codec vs → | jpeg | webp | VTM (published) | BPG (published) |",
                 "mlimg fakeq", "## Speed and memory", "fake report over 2 images of shapes [(40, 48, 3)]",
                 "deliberately broken", "## How these numbers are made", "## Sharpness", "HF ratio@0.2"):
        assert text in summary, text
    fake_row = next(line for line in summary.splitlines() if line.startswith("| mlimg fakeq") and "%" in line)
    assert "†" in fake_row  # 2-point curves: the cubic fit falls back to pchip and says so
    for plot in ("rd_psnr.png", "rd_msssim.png"):
        with Image.open(out / plot) as im:
            assert im.format == "PNG" and im.size[0] > 300


def test_rows_measure_the_real_file(tmp_path, image_dir, published_dir, fake_methods):
    result = run(_settings(tmp_path, image_dir, published_dir, methods=["fakeq"], anchors=[]))
    row = result.rows[0]
    im = Image.open(image_dir / f"{row['image']}.png").convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="MLIMG", method="fakeq", quality=20)
    assert row["bytes"] == len(buf.getvalue())
    assert row["bpp"] == pytest.approx(8 * len(buf.getvalue()) / (48 * 40))
    assert 20 < row["psnr"] < 60 and not row["exact"]
    assert row["encode_s"] > 0 and row["decode_s"] > 0


def test_lossless_table(tmp_path, image_dir, published_dir, fake_methods):
    result = run(_settings(tmp_path, image_dir, published_dir, methods=["fakell"], anchors=None, qualities=None))
    # A lossless method brings the lossless anchors and no lossy ones (JPEG XL only if imagecodecs has it).
    assert {r["subject"] for r in result.rows} - {"jxl-lossless"} == {"fakell", "png", "webp-lossless"}
    section = result.summary.split("## Lossless", 1)[1]
    assert "exact round trip | yes | yes" in section
    assert "mlimg fakell (v1) wins (smaller file):" in section and "/2 vs PNG" in section
    assert "## Rate–distortion" not in result.summary  # nothing lossy ran


def test_parallel_jobs_give_the_same_bytes(tmp_path, image_dir, published_dir):
    one = run(_settings(tmp_path, image_dir, published_dir, methods=[], anchors=["jpeg"]))
    two = run(_settings(tmp_path, image_dir, published_dir, methods=[], anchors=["jpeg"], jobs=2))
    assert [r["bytes"] for r in one.rows] == [r["bytes"] for r in two.rows]


def test_method_variants_add_fixed_options(tmp_path, image_dir, published_dir, fake_methods):
    settings = _settings(tmp_path, image_dir, published_dir, methods=["fakeq", "fakeq:coarser=4"], anchors=[])
    result = run(settings)
    plain, coarse = (json.loads((tmp_path / "out" / name).read_text())["results"]
                     for name in ("fakeq.json", "fakeq+coarser=4.json"))
    assert len(coarse["bpp"]) == 2 and all(c < p for c, p in zip(coarse["bpp"], plain["bpp"]))
    assert "mlimg fakeq (v1), coarser=4" in result.summary
    row = next(r for r in result.rows if r["subject"] == "fakeq:coarser=4" and r["params"] == "quality=20")
    im = Image.open(image_dir / f"{row['image']}.png").convert("RGB")
    buf = io.BytesIO()
    im.save(buf, format="MLIMG", method="fakeq", quality=20, coarser=4)
    assert row["bytes"] == len(buf.getvalue())
    assert subjects.parse_variant("gmm:refine=20:model=x:w=0.5") == ("gmm", {"refine": 20, "model": "x", "w": 0.5})
    for bad, message in (("fakeq:coarser", "METHOD:OPTION=VALUE"), ("fakeq:finer=2", "valid options: coarser, quality"),
                         ("fakeq:quality=0", "valid is 1..100")):
        with pytest.raises(ValueError, match=message):
            run(_settings(tmp_path, image_dir, published_dir, methods=[bad], anchors=[]))


def test_method_qualities_leave_the_anchor_sweeps_alone(fake_methods):
    settings = Settings(method_qualities=[10, 60, 95], qualities=[50])
    assert choose_points("fakeq", settings) == ({"quality": 10}, {"quality": 60}, {"quality": 95})
    assert choose_points("fakeq:coarser=2", settings) == ({"quality": 10}, {"quality": 60}, {"quality": 95})
    assert choose_points("jpeg", settings) == ({"quality": 50},)
    assert len(choose_points("jpeg", Settings(method_qualities=[10]))) == 13  # its own sweep
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--method-qualities", "0,50"])


def test_quick_spreads_points(fake_methods):
    points = choose_points("jpeg", Settings(quick=True))
    assert len(points) == 4 and points[0] == subjects.build("jpeg").points[0]
    assert points[-1] == subjects.build("jpeg").points[-1]
    assert choose_points("fakeq", Settings(qualities=[10, 50, 90])) == ({"quality": 10}, {"quality": 50}, {"quality": 90})


def test_unknown_names_are_usage_errors(tmp_path, image_dir, published_dir, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--images", str(image_dir), "--anchors", "jpeg,gif", "--methods", "none",
                              "--out", str(tmp_path / "o"), "--no-progress"])
    assert bench.run(args) == 2
    assert "unknown anchors gif; valid anchors: jpeg" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--qualities", "0,50"])


def test_builtin_images_are_deterministic():
    a, b = images.builtin_images(), images.builtin_images()
    assert len(a) == 3
    for x, y in zip(a, b):
        assert x.pixels.shape == (256, 256, 3) and x.pixels.dtype == np.uint8
        assert np.array_equal(x.pixels, y.pixels)
        assert x.pixels.std() > 10  # not flat
    assert images.spread(list(range(24)), 4) == [0, 8, 15, 23]


def test_build_curve_drops_incomplete_points():
    rows = [
        {"image": im, "point": p, "params": f"q={p}", "bpp": 1.0 + p, "psnr": 30.0 + p + i, "ms_ssim": 0.9,
         "rmse": 1.0, "ratio": 2.0, "encode_s": 0.1, "decode_s": 0.2, "encode_mib": 1.0, "decode_mib": 2.0}
        for i, im in enumerate(("a", "b")) for p in (0, 1)
    ]
    rows[3] = {"image": "b", "point": 1, "params": "q=1", "error": "ValueError: x"}
    curve = aggregate.build_curve("x", "X", "method", False, rows, n_images=2)
    assert curve.params == ["q=0"] and curve.incomplete == ["q=1"] and curve.errors == 1
    assert curve.psnr.tolist() == [30.5]


def test_published_loader_converts_ms_ssim_db(published_dir):
    curves, folder = published.load(published_dir)
    assert set(curves) == {"vtm", "bpg"} and folder == str(published_dir)
    vtm = curves["vtm"]
    assert vtm.ms_ssim[0] == pytest.approx(1 - 10 ** (-(10 + 26 / 4) / 10))
    assert published.load(published_dir / "missing") == ({}, None)


def test_palette_table_matches_equal_k():
    rows = []
    for subject, k_bpp in (("kmeans", 0.9), (subjects.PALETTE_ANCHOR, 1.0)):
        for point, k in enumerate((16, 64)):
            rows.append({"image": "a", "subject": subject, "point": point, "bpp": k_bpp * k / 16,
                         "psnr": 30.0 + point, "ms_ssim": 0.95})
    text = report.palette_table("kmeans", ({"k": 16}, {"k": 64}), ({"k": 16}, {"k": 64}), rows, 1)
    assert "| 16 | 0.900 |" in text and "-10.0 %" in text


def test_timed_sees_native_allocations():
    _, seconds, mib = measure.timed(lambda: np.ones(64 * 2**20 // 8).sum())
    assert seconds > 0
    if not math.isnan(mib):  # Linux only
        assert mib > 40


def test_error_in_decode_is_an_error_row(monkeypatch):
    class Corrupt(subjects.Subject):
        name, label, points = "corrupt", "corrupt", ({},)

        def encode(self, im, params):
            return b"junk"

        def decode(self, data):
            raise CodecError("chunk 'XXXX': bad")

    monkeypatch.setitem(subjects._cache, "corrupt", Corrupt())
    rows = measure.measure(measure.Task("img", _tiny(0), "corrupt", ({},)))
    assert rows[0]["error"] == "CodecError: chunk 'XXXX': bad"


def test_crop_sheet_fits_every_codec_into_the_first_ones_bytes(tmp_path, fake_methods):
    from mlimg.bench import cropsheet
    from mlimg.bench.images import TestImage

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:230]
    pixels = np.clip(np.stack([xx, yy, xx + yy], -1) % 256 + rng.normal(0, 20, (200, 230, 3)), 0, 255).astype(np.uint8)
    out = tmp_path / "sheet.png"
    tiles = cropsheet.build_sheet([TestImage("noisy", pixels)], out, target_bpp=12.0, methods=("fakeq", "fakeq"))
    assert [t["codec"] for t in tiles] == ["fakeq", "fakeq", "JPEG", "WebP"]
    first = tiles[0]["bpp"]
    assert first <= 12.0 and all(t["bpp"] <= first + 1e-9 for t in tiles[1:])
    assert all(t["hf_ratio"] > 0 and 10 < t["psnr"] < 60 for t in tiles)
    with Image.open(out) as im:
        assert im.size == (5 * (cropsheet.CROP + 4), cropsheet.CROP + cropsheet.LABEL_H + 4)


def test_sharpness_table_interpolates_hf_ratio():
    from mlimg.bench.aggregate import Curve
    from mlimg.bench.report import sharpness_table

    c = Curve("x", "mlimg x", "method", params=["a", "b"], values={"bpp": [0.1, 0.4], "psnr": [25, 30], "hf_ratio": [0.2, 0.8]})
    table = sharpness_table([c])
    assert "| mlimg x |" in table and "n/a" in table  # 0.5 bpp is outside the curve
    assert sharpness_table([Curve("y", "y", "anchor", params=["a"], values={"bpp": [0.1], "psnr": [20]})]) is None
