"""The ``vq`` method: per-image vector quantisation of pixel blocks.

The image is converted to YCbCr; luma (or the gray plane) is cut into b x b
blocks and chroma, at half resolution, into b x b blocks of both channels. Each
plane group gets its own codebook trained on that image by k-means (initialised
by the eigenvalue method of Somasundaram & Rani 2012, by LBG splitting, or at
random), stored quantised to 8 bits and entropy-coded; the block indices are
coded by indexmap.py. Optionally luma blocks are mean-removed (mean-removed VQ):
the block means form a small image coded by the same index-map coder.

Chunks, in file order per plane group (spec/methods/vq.md): ``VCBK`` codebook,
``VMEA`` block means (mean-removed only), ``VIDX`` block indices; then ``ALPH``.
"""
from __future__ import annotations

import warnings

import numpy as np

from .alpha import ALPHA_CHUNK, decode_alpha, encode_alpha
from .base import ChunkSpec, Codec, CodecError, Encoded, Option, boolean, int_in, one_of
from .indexmap import (
    Reader,
    StreamDecoder,
    StreamEncoder,
    decode_indexmap,
    encode_indexmap,
    probs_from_counts_exact,
    put_varint,
)

_SEED = 0
MAX_CODEBOOK = 2048
INITS = ("eigen", "lbg", "random")
_MEANS_VECTORS = np.arange(256, dtype=np.int64)[:, None]  # block means ranked by value


def codebook_for_quality(quality: int) -> int:
    """Luma codebook size for quality 1..100: 4 at q=1 up to 1024 at q=100, geometric.

    Larger codebooks (option `codebook`, up to 2048) cost more to train and store than
    they gain on photos; the quality range stops where the curve flattens.
    """
    return int(round(2 ** (2 + 8 * (quality - 1) / 99)))


# ------------------------------------------------------------ colour + blocks


def rgb_to_ycbcr(rgb) -> np.ndarray:
    """JPEG full-range YCbCr, rounded to uint8 (encoder side only)."""
    x = np.asarray(rgb, dtype=np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.clip(np.rint(np.stack([y, cb, cr], axis=-1)), 0, 255).astype(np.uint8)


def ycbcr_to_rgb(ycc) -> np.ndarray:
    """Inverse in 16.16 fixed point (the libjpeg constants): bit-exact everywhere."""
    y = ycc[..., 0].astype(np.int64)
    cb = ycc[..., 1].astype(np.int64) - 128
    cr = ycc[..., 2].astype(np.int64) - 128
    r = y + ((91881 * cr + 32768) >> 16)
    g = y + ((-22554 * cb - 46802 * cr + 32768) >> 16)
    b = y + ((116130 * cb + 32768) >> 16)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _pad(plane, mult: int) -> np.ndarray:
    h, w = plane.shape[:2]
    ph, pw = -h % mult, -w % mult
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (plane.ndim - 2)
    return np.pad(plane, pad, mode="edge")


def to_blocks(plane, b: int) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W[, C]) -> (rows*cols, b*b*C) blocks of the edge-padded plane, and the grid."""
    p = _pad(plane if plane.ndim == 3 else plane[:, :, None], b)
    h, w, c = p.shape
    blocks = p.reshape(h // b, b, w // b, b, c).transpose(0, 2, 1, 3, 4).reshape(-1, b * b * c)
    return blocks, (h // b, w // b)


def from_blocks(blocks, grid, b: int, channels: int) -> np.ndarray:
    rows, cols = grid
    x = blocks.reshape(rows, cols, b, b, channels).transpose(0, 2, 1, 3, 4)
    return x.reshape(rows * b, cols * b, channels)


def _half(plane) -> np.ndarray:
    """2x2 box down-sampling of an (H, W, C) plane (edge-padded to even size)."""
    p = _pad(plane, 2).astype(np.float64)
    return np.rint((p[0::2, 0::2] + p[1::2, 0::2] + p[0::2, 1::2] + p[1::2, 1::2]) / 4).astype(np.uint8)


def upsample2(plane) -> np.ndarray:
    """2x up-sampling with the (1, 3)/4 "fancy" filter on both axes, integer and exact."""
    p = plane.astype(np.int64)

    def axis0(x):  # output rows 2i and 2i+1 weigh row i by 3 and its neighbour by 1 (edges clamp)
        prev = np.concatenate([x[:1], x[:-1]])
        nxt = np.concatenate([x[1:], x[-1:]])
        out = np.empty((2 * len(x),) + x.shape[1:], dtype=np.int64)
        out[0::2], out[1::2] = 3 * x + prev, 3 * x + nxt
        return out

    up = axis0(axis0(p).swapaxes(0, 1)).swapaxes(0, 1)  # both axes, scaled by 16
    return ((up + 8) >> 4).astype(np.uint8)


# ------------------------------------------------------------ codebook training


def _kmeans(data, init, max_iter: int):
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicates give fewer clusters: fine
        # one thread: the thread count changes float sums, hence the bytes
        km = KMeans(n_clusters=len(init), init=init, n_init=1, max_iter=max_iter, random_state=_SEED).fit(data)
    return km.cluster_centers_


def block_eigenvalues(blocks, b: int) -> np.ndarray:
    """Largest eigenvalue of each block's row covariance (first channel): its detail energy."""
    x = blocks.reshape(len(blocks), b, b, -1)[..., 0].astype(np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    cov = np.einsum("nij,nik->njk", x, x) / b
    return np.linalg.eigvalsh(cov)[:, -1]


def _spread_seeds(data, order, k):
    """k seeds taken evenly along an ordering of the data (deterministic)."""
    pick = order[np.linspace(0, len(order) - 1, k).round().astype(np.int64)]
    return data[pick]


def init_eigen(data, k: int, b: int, max_iter: int) -> np.ndarray:
    """Somasundaram & Rani: split by mean eigenvalue, cluster each class, merge."""
    eig = block_eigenvalues(data, b)
    high = eig > eig.mean()
    parts = []
    n_high = int(high.sum())
    k_high = int(round(k * n_high / len(data)))
    k_high = min(max(k_high, 1 if n_high else 0), k - 1, n_high)
    for mask, kk in ((high, k_high), (~high, k - k_high)):
        if kk <= 0:
            continue
        sub, sub_eig = data[mask], eig[mask]
        seeds = _spread_seeds(sub, np.argsort(sub_eig, kind="stable"), kk)
        parts.append(_kmeans(sub, seeds, max(2, max_iter // 2)) if len(sub) > kk else seeds)
    return np.concatenate(parts)


def init_lbg(data, k: int, max_iter: int) -> np.ndarray:
    """Linde-Buzo-Gray: split every codeword (+-eps) and refine, until k codewords."""
    book = data.mean(axis=0, keepdims=True)
    while len(book) < k:
        grow = min(len(book), k - len(book))
        # split the codewords with the most assigned blocks first
        idx = _nearest(data, book)
        busiest = np.argsort(-np.bincount(idx, minlength=len(book)), kind="stable")[:grow]
        eps = np.maximum(data.std(axis=0) * 0.01, 0.5)
        book = np.concatenate([book, book[busiest] + eps])
        book[busiest] -= eps
        book = _kmeans(data, book, max(2, max_iter // 4))
    return book


def init_random(data, k: int) -> np.ndarray:
    rng = np.random.default_rng(_SEED)
    return data[rng.choice(len(data), k, replace=False)]


def _nearest(data, book) -> np.ndarray:
    d = book.astype(np.float32)
    out = np.empty(len(data), dtype=np.int64)
    dd = (d * d).sum(axis=1)
    for s in range(0, len(data), 8192):
        x = data[s : s + 8192].astype(np.float32)
        out[s : s + len(x)] = (dd[None, :] - 2 * x @ d.T).argmin(axis=1)
    return out


def train_codebook(data, k: int, init: str, b: int, max_iter: int = 20, sample: int = 30000) -> np.ndarray:
    """Codebook (k', D) float for blocks (N, D); k' = min(k, distinct blocks)."""
    data = np.asarray(data, dtype=np.float64)
    train = data
    if len(data) > sample:
        rng = np.random.default_rng(_SEED)
        train = data[np.sort(rng.choice(len(data), sample, replace=False))]
    k = min(k, len(np.unique(train, axis=0)))
    if k <= 1:
        return train.mean(axis=0, keepdims=True)
    if init == "eigen":
        start = init_eigen(train, k, b, max_iter)
    elif init == "lbg":
        start = init_lbg(train, k, max_iter)
    else:
        start = init_random(train, k)
    return _kmeans(train, start, max_iter)


# ------------------------------------------------------------ payload coding


def _zigzag(s):
    return np.where(s >= 0, 2 * s, -2 * s - 1)


def _unzigzag(z):
    return np.where(z % 2 == 0, z // 2, -(z + 1) // 2)


def _med(left, up, upleft):
    """LOCO-I median edge detector: the median of left, up and left + up - upleft."""
    return np.clip(left + up - upleft, np.minimum(left, up), np.maximum(left, up))


def _codeword_residuals(book: np.ndarray, b: int, channels: int) -> np.ndarray:
    """Prediction residuals of every codeword value from its in-block neighbours (encoder)."""
    x = book.astype(np.int64).reshape(len(book), b, b, channels)
    pred = np.full_like(x, 128)
    pred[:, 0, 1:] = x[:, 0, :-1]
    pred[:, 1:, 0] = x[:, :-1, 0]
    pred[:, 1:, 1:] = _med(x[:, 1:, :-1], x[:, :-1, 1:], x[:, :-1, :-1])
    return (x - pred).reshape(len(book), -1)


def _codewords_from_residuals(res: np.ndarray, b: int, channels: int) -> np.ndarray:
    """Inverse of _codeword_residuals: raster order over the block, vectorised over codewords."""
    r = res.reshape(len(res), b, b, channels)
    x = np.zeros_like(r)
    for i in range(b):
        for j in range(b):
            if i == 0 and j == 0:
                pred = 128
            elif i == 0:
                pred = x[:, 0, j - 1]
            elif j == 0:
                pred = x[:, i - 1, 0]
            else:
                pred = _med(x[:, i, j - 1], x[:, i - 1, j], x[:, i - 1, j - 1])
            x[:, i, j] = np.clip(pred + r[:, i, j], -1024, 1024)  # keep corrupt data bounded
    return x.reshape(len(res), -1)


def encode_codebook(book: np.ndarray, b: int, channels: int) -> bytes:
    """(K, D) uint8 codewords: in-block MED prediction, zig-zag, range-coded with a stored histogram."""
    sym = _zigzag(_codeword_residuals(book, b, channels)).ravel()
    hist = np.bincount(sym)
    out = bytearray()
    put_varint(out, len(hist))
    for c in hist:
        put_varint(out, int(c))
    enc = StreamEncoder()
    enc.encode(sym, probs_from_counts_exact(hist))
    return bytes(out) + enc.bytes()


def decode_codebook(r: Reader, k: int, b: int, channels: int) -> np.ndarray:
    dims = b * b * channels
    nsym = r.varint(512)
    if nsym == 0:
        raise r.fail("empty codebook histogram")
    hist = np.array([r.varint(k * dims) for _ in range(nsym)], dtype=np.int64)
    if int(hist.sum()) != k * dims:
        raise r.fail(f"codebook histogram total {int(hist.sum())}, expected {k * dims}")
    sym = StreamDecoder(r.rest(), r.chunk).decode(probs_from_counts_exact(hist), k * dims)
    book = _codewords_from_residuals(_unzigzag(sym).reshape(k, dims), b, channels)
    if book.min() < 0 or book.max() > 255:
        raise r.fail("codeword value outside 0..255")
    return book.astype(np.uint8)


# ------------------------------------------------------------ the codec

_PLANE_LUMA, _PLANE_CHROMA = 0, 1


class VQCodec(Codec):
    float_encoder = True  # k-means (scikit-learn) and eigen-split codebooks in float64
    name = "vq"
    version = 1
    modes = ("L", "RGB", "RGBA")
    chunk_specs = (
        ChunkSpec("VCBK", "u8 plane, u8 block, u8 flags, varint K, range-coded DPCM codebook (spec/methods/vq.md)"),
        ChunkSpec("VMEA", "block means of a mean-removed plane: an index map over values 0..255"),
        ChunkSpec("VIDX", "block indices: index map coded with the codebook as similarity vectors"),
        ALPHA_CHUNK,
    )
    options = {
        "quality": Option(50, int_in(1, 100), "an integer 1..100 (sets the codebook size)"),
        "codebook": Option(None, int_in(2, MAX_CODEBOOK, True), f"an integer 2..{MAX_CODEBOOK} or None"),
        "block": Option(4, int_in(2, 16), "an integer 2..16 (block side in pixels)"),
        "init": Option("eigen", one_of(*INITS), "'eigen', 'lbg' or 'random'"),
        "mean_removed": Option(False, boolean, "True or False"),
    }
    loop_filter_default = "auto"  # fLTR: +0.35-0.8 dB on Kodak (README "Loop filter")
    bench_points = tuple({"quality": q} for q in (10, 25, 40, 55, 70, 85, 100))

    # -------------------------------------------------------------- encode

    def encode(self, pixels, mode, opts):
        pixels = np.asarray(pixels, dtype=np.uint8)
        height, width = pixels.shape[:2]
        b = opts["block"]
        k_luma = opts["codebook"] or codebook_for_quality(opts["quality"])
        if mode == "L":
            planes = [(_PLANE_LUMA, pixels[:, :, None], k_luma)]
        else:
            ycc = rgb_to_ycbcr(pixels[:, :, :3])
            planes = [(_PLANE_LUMA, ycc[:, :, :1], k_luma), (_PLANE_CHROMA, _half(ycc[:, :, 1:]), max(2, k_luma // 4))]
        chunks, info = [], {}
        for plane, data, k in planes:
            plane_chunks, used = self._encode_plane(plane, data, k, b, opts)
            chunks += plane_chunks
            info[f"vq_codebook_{'luma' if plane == _PLANE_LUMA else 'chroma'}"] = used
        if mode == "RGBA":
            chunks.append(("ALPH", encode_alpha(pixels[:, :, 3])))
        return Encoded(chunks=chunks, info=info)

    def _encode_plane(self, plane, data, k, b, opts):
        blocks, grid = to_blocks(data, b)
        mean_removed = opts["mean_removed"] and plane == _PLANE_LUMA
        means = None
        if mean_removed:
            means = np.rint(blocks.mean(axis=1)).astype(np.int64)
            blocks = blocks.astype(np.int64) - means[:, None] + 128  # residuals stored offset by 128
        book = np.clip(np.rint(train_codebook(blocks, k, opts["init"], b)), 0, 255).astype(np.uint8)
        idx = _nearest(blocks, book)
        head = bytearray([plane, b, int(mean_removed)])
        put_varint(head, len(book))
        out = [("VCBK", bytes(head) + encode_codebook(book, b, data.shape[2]))]
        if mean_removed:
            out.append(("VMEA", encode_indexmap(means.reshape(grid), _MEANS_VECTORS)))
        out.append(("VIDX", encode_indexmap(idx.reshape(grid), book.astype(np.int64))))
        return out, len(book)

    # -------------------------------------------------------------- decode

    def decode(self, header, chunks):
        height, width = header.height, header.width
        groups, alpha = _split(chunks, header.mode)
        planes = {}
        for vcbk, vmea, vidx in groups:
            r = Reader(vcbk, "VCBK")
            plane, b, flags = r.u8(), r.u8(), r.u8()
            if plane not in (_PLANE_LUMA, _PLANE_CHROMA) or plane in planes:
                raise r.fail(f"bad or repeated plane number {plane}")
            if not 2 <= b <= 16 or flags > 1:
                raise r.fail(f"bad block size {b} or flags {flags}")
            if (flags == 1) != (vmea is not None) or (flags and plane != _PLANE_LUMA):
                raise CodecError("VMEA chunk: present exactly when the luma VCBK says mean-removed")
            k = r.varint(MAX_CODEBOOK)
            if k < 1:
                raise r.fail("empty codebook")
            ph, pw = (height, width) if plane == _PLANE_LUMA else ((height + 1) // 2, (width + 1) // 2)
            channels = 1 if plane == _PLANE_LUMA else 2
            grid = (-(-ph // b), -(-pw // b))
            book = decode_codebook(r, k, b, channels)
            idx = decode_indexmap(vidx, *grid, book.astype(np.int64), "VIDX")
            blocks = book[idx.ravel()].astype(np.int64)
            if vmea is not None:
                means = decode_indexmap(vmea, *grid, _MEANS_VECTORS, "VMEA").ravel()
                blocks = np.clip(blocks - 128 + means[:, None], 0, 255)
            planes[plane] = from_blocks(blocks.astype(np.uint8), grid, b, channels)[:ph, :pw]
        expected = {_PLANE_LUMA} if header.mode == "L" else {_PLANE_LUMA, _PLANE_CHROMA}
        if set(planes) != expected:
            raise CodecError(f"VCBK chunk: planes {sorted(planes)} found, expected {sorted(expected)}")
        luma = planes[_PLANE_LUMA]
        if header.mode == "L":
            return luma[:, :, 0]
        chroma = upsample2(planes[_PLANE_CHROMA])[:height, :width]
        rgb = ycbcr_to_rgb(np.concatenate([luma, chroma], axis=2))
        if header.mode == "RGBA":
            return np.concatenate([rgb, decode_alpha(alpha, height, width)[:, :, None]], axis=2)
        return rgb

    def describe(self, header, chunks):
        info = {}
        for chunk_type, payload in chunks:
            if chunk_type == "VCBK" and len(payload) >= 4:
                try:
                    r = Reader(payload, "VCBK")
                    plane, b, flags, k = r.u8(), r.u8(), r.u8(), r.varint(MAX_CODEBOOK)
                except CodecError:
                    continue
                name = "luma" if plane == _PLANE_LUMA else "chroma"
                info[f"vq_codebook_{name}"] = k
                info["vq_block"] = b
                info["vq_mean_removed"] = bool(flags & 1) or info.get("vq_mean_removed", False)
        return info

    # -------------------------------------------------------------- bench

    def bench_report(self, images) -> str:
        """Luma distortion of eigenvalue vs random vs LBG initialisation at equal codebook size."""
        sizes, n_images = (64, 256), min(3, len(images))
        rows = ["| codebook | init | luma MSE | luma PSNR (dB) |", "|---|---|---|---|"]
        for k in sizes:
            for init in INITS:
                mse = []
                for img in images[:n_images]:
                    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
                    blocks, _ = to_blocks(rgb_to_ycbcr(arr)[:, :, :1], 4)
                    book = np.clip(np.rint(train_codebook(blocks, k, init, 4)), 0, 255)
                    err = blocks.astype(np.float64) - book[_nearest(blocks, book)]
                    mse.append(float((err**2).mean()))
                m = float(np.mean(mse))
                psnr = f"{10 * np.log10(255**2 / m):.2f}" if m > 0 else "inf"
                rows.append(f"| {k} | {init} | {m:.2f} | {psnr} |")
        note = f"\nMean over the first {n_images} images; 4x4 luma blocks, 20 k-means iterations after each initialisation.\n"
        return "\n".join(rows) + note


def _split(chunks, mode):
    """Group the codec's chunks into (VCBK, VMEA or None, VIDX) triples, plus the ALPH payload."""
    groups, alpha, current = [], None, None
    for chunk_type, payload in chunks:
        if chunk_type == "VCBK":
            if current is not None:
                raise CodecError("VCBK chunk: previous codebook has no VIDX chunk")
            current = [payload, None]
        elif chunk_type == "VMEA":
            if current is None or current[1] is not None:
                raise CodecError("VMEA chunk: not directly after its VCBK chunk")
            current[1] = payload
        elif chunk_type == "VIDX":
            if current is None:
                raise CodecError("VIDX chunk: no VCBK chunk before it")
            groups.append((current[0], current[1], payload))
            current = None
        elif chunk_type == "ALPH":
            if alpha is not None:
                raise CodecError("ALPH chunk: appears more than once")
            alpha = payload
    if current is not None:
        raise CodecError("VIDX chunk: missing after the last VCBK chunk")
    if (mode == "RGBA") != (alpha is not None):
        raise CodecError("ALPH chunk: " + ("missing" if mode == "RGBA" else "not allowed for this mode"))
    return groups, alpha
