"""The ``kmeans`` method: a k-means colour palette plus a context-coded index map.

Chunks (spec/methods/kmeans.md): ``kINF`` facts about the fit (ancillary JSON),
``KPAL`` the palette (8-bit colours), ``KIDX`` the index map coded by
indexmap.py, and ``ALPH`` (alpha.py) for RGBA.

Encoding: k-means (scikit-learn, fixed seed) on a pixel sample in RGB or CIELAB,
palette rounded to 8 bits, every pixel assigned to its nearest palette colour
(optionally with ordered dithering), then one Lloyd step on all pixels in RGB to
move each colour to the mean of its pixels. ``k="auto"`` picks k at the elbow of
the inertia curve, as the source notebook does by eye.
"""
from __future__ import annotations

import json

import warnings

import numpy as np

from .alpha import ALPHA_CHUNK, decode_alpha, encode_alpha
from .base import ChunkSpec, Codec, CodecError, Encoded, Option, boolean, int_in, one_of
from .indexmap import Reader, decode_indexmap, encode_indexmap, put_varint

_SEED = 0
_AUTO_KS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64)
_ASSIGN_ROWS = 1 << 15  # pixels per distance block: bounds memory at k=256


def k_for_quality(quality: int) -> int:
    """Palette size for a quality 1..100: 2 at q=1 up to 256 at q=100, geometric, monotone."""
    return int(min(256, max(2, round(2 ** (1 + 7 * (quality - 1) / 99)))))


# ---------------------------------------------------------------- options


def _check_k(v):
    if v is None or v == "auto":
        return v
    if isinstance(v, bool) or int(v) != v or not 2 <= int(v) <= 256:
        raise ValueError(v)
    return int(v)


# ---------------------------------------------------------------- colour space


def srgb_to_lab(rgb) -> np.ndarray:
    """(N, 3) sRGB 0..255 -> CIELAB (D65), float64."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


# ---------------------------------------------------------------- fitting


def _sample(colors: np.ndarray, n: int) -> np.ndarray:
    if len(colors) <= n:
        return colors
    rng = np.random.default_rng(_SEED)
    return colors[np.sort(rng.choice(len(colors), n, replace=False))]


def _fit(samples: np.ndarray, k: int):
    """k-means on float samples; returns (centres, inertia per sample)."""
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    k = min(k, len(np.unique(samples, axis=0)))
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicates give fewer clusters: fine
        # one thread: the thread count changes float sums, hence the bytes
        km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=_SEED).fit(samples)
    return km.cluster_centers_, float(km.inertia_) / len(samples)


def elbow_k(ks, inertias) -> int:
    """The elbow: the k farthest below the chord of the log-k / normalised-inertia curve."""
    x = np.log(np.asarray(ks, np.float64))
    y = np.asarray(inertias, np.float64)
    x = (x - x[0]) / max(x[-1] - x[0], 1e-12)
    y = (y - y[-1]) / max(y[0] - y[-1], 1e-12)
    below = (1 - x) - y  # distance under the straight line from (0, 1) to (1, 0)
    return int(ks[int(np.argmax(below))])


def nearest(pixels: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for every row of pixels, in bounded-memory blocks."""
    c = centres.astype(np.float32)
    cc = (c * c).sum(axis=1)
    out = np.empty(len(pixels), dtype=np.int64)
    for start in range(0, len(pixels), _ASSIGN_ROWS):
        p = pixels[start : start + _ASSIGN_ROWS].astype(np.float32)
        out[start : start + len(p)] = (cc[None, :] - 2 * p @ c.T).argmin(axis=1)
    return out


_BAYER4 = np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], dtype=np.float64)


def _dither_offsets(height: int, width: int, palette: np.ndarray) -> np.ndarray:
    """Ordered (Bayer 4x4) dither offsets scaled to the typical palette spacing."""
    p = palette.astype(np.float64)
    d = np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    spacing = float(np.median(d.min(axis=1))) if len(p) > 1 else 0.0
    tile = (_BAYER4 + 0.5) / 16 - 0.5
    grid = np.tile(tile, (height // 4 + 1, width // 4 + 1))[:height, :width]
    return (grid * spacing / np.sqrt(p.shape[1])).reshape(-1, 1)


def quantize(colors: np.ndarray, height: int, width: int, opts) -> tuple[np.ndarray, np.ndarray, dict]:
    """colors (N, C) uint8 -> (palette (k, C) uint8, indices (N,), facts).

    Nearest-colour searches run on the distinct colours only (a photo has far
    fewer distinct colours than pixels) and map back through the inverse index.
    """
    channels = colors.shape[1]
    lab = opts["colorspace"] == "lab" and channels == 3
    space = srgb_to_lab if lab else (lambda x: np.asarray(x, np.float64))
    distinct, inverse, weight = _distinct(colors)
    rgb_samples = _sample(colors, opts["sample"])
    samples = space(rgb_samples)
    k = opts["k"] if opts["k"] is not None else k_for_quality(opts["quality"])
    facts = {"colors_before": int(len(distinct))}
    if k == "auto":
        ks = [q for q in _AUTO_KS if q <= max(2, len(distinct))]
        curve = [_fit(_sample(samples, 4000), q)[1] for q in ks]
        k = elbow_k(ks, curve) if len(ks) > 1 else 2
        facts.update(k_auto=True, k_auto_curve={"ks": ks, "inertia": [round(v, 3) for v in curve]})
    centres, inertia = _fit(samples, k)
    if lab:  # palette = RGB mean of the sample pixels in each CIELAB cluster
        centres = _means(nearest(samples, centres), rgb_samples, np.ones(len(samples)), len(centres))
    palette = np.clip(np.rint(centres), 0, 255).astype(np.uint8)
    if opts["dither"]:
        jittered = np.clip(colors.astype(np.float64) + _dither_offsets(height, width, palette), 0, 255)
        idx = nearest(space(jittered), space(palette))
    else:
        idx = nearest(space(distinct), space(palette))
        if not lab:  # one Lloyd step on all pixels (weighted distinct colours), then reassign
            counts = np.bincount(idx, weights=weight, minlength=len(palette))
            means = _means(idx, distinct, weight, len(palette))
            palette[counts > 0] = np.clip(np.rint(means[counts > 0]), 0, 255).astype(np.uint8)
            idx = nearest(distinct.astype(np.float64), palette)
        idx = idx[inverse]
    facts.update(k=int(len(palette)), inertia=round(inertia, 4), colors_after=int(len(np.unique(idx))))
    return palette, idx, facts


def _means(idx, points, weight, k) -> np.ndarray:
    """Weighted mean of the points assigned to each of k clusters (0 for empty ones)."""
    counts = np.bincount(idx, weights=weight, minlength=k)
    sums = np.stack([np.bincount(idx, weights=weight * points[:, c], minlength=k) for c in range(points.shape[1])], 1)
    return sums / np.maximum(counts, 1e-12)[:, None]


def _distinct(colors: np.ndarray):
    """Distinct colours (D, C) uint8, the inverse map (N,) and each colour's pixel count."""
    packed = np.zeros(len(colors), dtype=np.uint32)
    for c in range(colors.shape[1]):
        packed = (packed << np.uint32(8)) | colors[:, c]
    keys, inverse, counts = np.unique(packed, return_inverse=True, return_counts=True)
    shifts = 8 * np.arange(colors.shape[1] - 1, -1, -1, dtype=np.uint32)
    distinct = ((keys[:, None] >> shifts[None, :]) & np.uint32(255)).astype(np.uint8)
    return distinct, inverse.ravel(), counts.astype(np.float64)


# ---------------------------------------------------------------- the codec


class KMeansCodec(Codec):
    float_encoder = True  # k-means (scikit-learn) in float64 picks the palette
    name = "kmeans"
    version = 1
    modes = ("L", "RGB", "RGBA")
    chunk_specs = (
        ChunkSpec("kINF", "UTF-8 JSON object: chosen k, inertia, distinct colours before/after (informative)"),
        ChunkSpec("KPAL", "varint k (1..256), then k colours of C bytes (C = 1 for L, 3 otherwise)"),
        ChunkSpec("KIDX", "index map, hierarchical context-coded ranks (spec/methods/kmeans.md)"),
        ALPHA_CHUNK,
    )
    options = {
        "quality": Option(75, int_in(1, 100), "an integer 1..100 (sets k when k is not given)"),
        "k": Option(None, _check_k, "an integer 2..256, 'auto' or None"),
        "colorspace": Option("rgb", one_of("rgb", "lab"), "'rgb' or 'lab'"),
        "dither": Option(False, boolean, "True or False"),
        "sample": Option(20000, int_in(256, 1 << 24), "an integer 256..16777216 (pixels used to fit)"),
    }
    bench_points = ({"k": 8}, {"k": 16}, {"k": 32}, {"k": 64}, {"k": 128}, {"k": 256})

    def encode(self, pixels, mode, opts):
        pixels = np.asarray(pixels, dtype=np.uint8)
        height, width = pixels.shape[:2]
        channels = 1 if mode == "L" else 3
        colors = pixels.reshape(height * width, -1)[:, :channels]
        palette, idx, facts = quantize(colors, height, width, opts)
        pal = bytearray()
        put_varint(pal, len(palette))
        pal += palette.tobytes()
        stored = {k: v for k, v in facts.items() if k != "k_auto_curve"}  # the elbow curve stays out of the file
        chunks = [
            ("kINF", json.dumps(stored, sort_keys=True, separators=(",", ":")).encode()),
            ("KPAL", bytes(pal)),
            ("KIDX", encode_indexmap(idx.reshape(height, width), palette.astype(np.int64))),
        ]
        if mode == "RGBA":
            chunks.append(("ALPH", encode_alpha(pixels[:, :, 3])))
        return Encoded(chunks=chunks, info={f"kmeans_{k}": v for k, v in facts.items()})

    def decode(self, header, chunks):
        found = _collect(chunks, header.mode)
        channels = 1 if header.mode == "L" else 3
        r = Reader(found["KPAL"], "KPAL")
        k = r.varint(256)
        if k < 1:
            raise r.fail("palette is empty")
        palette = np.frombuffer(r.take(k * channels), dtype=np.uint8).reshape(k, channels)
        if r.pos != len(r.data):
            raise r.fail(f"{len(r.data) - r.pos} trailing bytes after {k} colours")
        idx = decode_indexmap(found["KIDX"], header.height, header.width, palette.astype(np.int64), "KIDX")
        out = palette[idx]
        if header.mode == "L":
            return out[:, :, 0]
        if header.mode == "RGBA":
            alpha = decode_alpha(found["ALPH"], header.height, header.width)
            return np.concatenate([out, alpha[:, :, None]], axis=2)
        return out

    def describe(self, header, chunks):
        for chunk_type, payload in chunks:
            if chunk_type == "kINF":
                try:
                    facts = json.loads(payload.decode())
                except (UnicodeDecodeError, ValueError):
                    return {}
                if isinstance(facts, dict):
                    return {f"kmeans_{k}": v for k, v in facts.items()}
        return {}


def _collect(chunks, mode) -> dict[str, bytes]:
    """The codec's chunks by type; each required one exactly once."""
    found: dict[str, bytes] = {}
    for chunk_type, payload in chunks:
        if chunk_type in found and chunk_type != "kINF":
            raise CodecError(f"{chunk_type} chunk: appears more than once")
        found[chunk_type] = payload
    required = ["KPAL", "KIDX"] + (["ALPH"] if mode == "RGBA" else [])
    for chunk_type in required:
        if chunk_type not in found:
            raise CodecError(f"{chunk_type} chunk: missing")
    return found
