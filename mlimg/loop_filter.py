"""The adaptive loop filter of the `fLTR` chunk (spec/MLIMG.md section 14).

A lossy method's decoded image is a little blurred and a little off in colour, differently
for every image. The encoder fits, by least squares against the original, a small linear
filter per colour channel and per pixel class (local activity x edge direction, as VVC's
adaptive loop filter classifies), quantises its coefficients to integers and stores them;
the decoder applies them to the method's 8-bit output with integer arithmetic only, so the
filtered pixels are a bit-exact function of the method's pixels on every machine.

Each output sample is its input plus a correction: point-symmetric taps of the channel's own
7x7 diamond (the differences P(p+o) + P(p-o) - 2 P(p), so flat areas pass unchanged), for RGB
the other two channels' offsets and their 3x3-cross second differences, and a bias.

The chunk is ancillary: a decoder that does not know it shows the unfiltered image.
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np

VERSION = 0
SHIFT = 7  # coefficients in units of 2**-SHIFT
MAX_COEFFICIENT = (1 << 15) - 1
MAX_ACTIVITY_CLASSES = 16
DIRECTION_CLASSES = (1, 3)
# One of each point-symmetric pair of the 7x7 diamond (|dy| + |dx| <= 3), in this order.
OWN_TAPS = tuple((dy, dx) for dy in range(4) for dx in range(-3, 4)
                 if abs(dy) + abs(dx) <= 3 and (dy > 0 or dx > 0))
CROSS_TAPS = ((0, 1), (1, 0))
_OWN, _CROSS = np.array(OWN_TAPS, np.int64), np.array(CROSS_TAPS, np.int64)  # for the compiled filter
MARGIN = 4  # rows/columns of context a band needs: taps reach 3, classification 2
BAND_ROWS = 128  # rows per band: memory stays bounded on large images
MAX_THREADS = 4  # bands the decoder filters at once, one thread each
# (activity classes, direction classes) the encoder tries; measured on rnn/gmm Kodak decodes,
# direction classes pay on rnn (kodim01 at quality 100, ad-hoc fits: 8 activity classes alone
# +0.31 dB, 4 x 3 with directions +0.39)
CANDIDATES = ((1, 1), (2, 3), (4, 3), (8, 3), (16, 3))
# The encoder keeps a filter when its PSNR gain beats its bytes' cost, counted as
# DB_PER_LOG_RATE * ln(1 + filter bits / file bits): near the slope of our methods' curves.
DB_PER_LOG_RATE = 6.0
_HEAD = struct.Struct(">BBBBBB")  # version, channels, shift, activity classes, direction classes, golomb k


class LoopFilterError(OSError):
    """An fLTR chunk is malformed (the message says how)."""


@dataclass(frozen=True)
class LoopFilter:
    channels: int  # colour channels filtered: 1 (L) or 3 (RGB, RGBA's colour)
    activity_classes: int
    direction_classes: int
    thresholds: tuple[int, ...]  # activity_classes - 1, non-decreasing
    coefficients: np.ndarray  # int64 (channels, classes, features)
    shift: int = SHIFT

    @property
    def classes(self) -> int:
        return self.activity_classes * self.direction_classes


def feature_count(channels: int) -> int:
    return len(OWN_TAPS) + (channels - 1) * (1 + len(CROSS_TAPS)) + 1


# ---------------------------------------------------------------- classification and features


def _band(pixels: np.ndarray, y0: int, y1: int, dtype=np.float64) -> np.ndarray:
    """Rows y0-MARGIN .. y1+MARGIN and MARGIN extra columns each side, edges replicated."""
    rows = np.clip(np.arange(y0 - MARGIN, y1 + MARGIN), 0, pixels.shape[0] - 1)
    # float64 (the encoder's) holds every sum below exactly (integers far under 2**53) and feeds
    # BLAS directly; the decoder's compiled filter reads int32
    band = pixels[rows].astype(dtype)
    return np.pad(band, ((0, 0), (MARGIN, MARGIN), (0, 0)), mode="edge")


def _at(z: np.ndarray, dy: int, dx: int, h: int, w: int) -> np.ndarray:
    """The h x w window of a band shifted by (dy, dx) from its centre."""
    return z[MARGIN + dy:MARGIN + dy + h, MARGIN + dx:MARGIN + dx + w]


def _gradient_sums(z: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """3x3 sums of |horizontal| and |vertical| central differences of the channel sum."""
    luma = z.sum(axis=2)
    m = MARGIN
    gh = np.abs(luma[m - 1:m + h + 1, m:m + w + 2] - luma[m - 1:m + h + 1, m - 2:m + w])
    gv = np.abs(luma[m:m + h + 2, m - 1:m + w + 1] - luma[m - 2:m + h, m - 1:m + w + 1])
    return tuple(sum(g[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) for g in (gh, gv))


def _activity_direction(z: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel of a band: activity H + V, and direction 1 (H > 2V), 2 (V > 2H) or 0."""
    sh, sv = _gradient_sums(z, h, w)
    direction = np.where(sh > 2 * sv, 1, np.where(sv > 2 * sh, 2, 0)).astype(np.int8)
    return (sh + sv).astype(np.int32), direction  # activity <= 2 * 9 * 3 * 255: exact in int32


def _classes(activity: np.ndarray, direction: np.ndarray, thresholds, direction_classes: int) -> np.ndarray:
    cls = np.zeros(activity.shape, np.int64)
    for t in thresholds:  # activity class: how many thresholds the activity exceeds
        cls += activity > t
    if direction_classes == 3:
        cls = cls * 3 + direction
    return cls


def _features(z: np.ndarray, channel: int, h: int, w: int) -> np.ndarray:
    """(features, h*w): the filter's inputs for one channel of a band, in the spec's order."""
    out = np.empty((feature_count(z.shape[2]), h * w))
    centre = _at(z[..., channel], 0, 0, h, w)
    rows = iter(out)
    for dy, dx in OWN_TAPS:
        np.subtract(_at(z[..., channel], dy, dx, h, w) + _at(z[..., channel], -dy, -dx, h, w), 2 * centre,
                    out=next(rows).reshape(h, w))
    for other in range(z.shape[2]):
        if other == channel:
            continue
        plane = z[..., other]
        mid = _at(plane, 0, 0, h, w)
        np.subtract(mid, centre, out=next(rows).reshape(h, w))
        for dy, dx in CROSS_TAPS:
            np.subtract(_at(plane, dy, dx, h, w) + _at(plane, -dy, -dx, h, w), 2 * mid, out=next(rows).reshape(h, w))
    next(rows)[:] = 1.0
    return out


def _bands(height: int):
    for y0 in range(0, height, BAND_ROWS):
        yield y0, min(height, y0 + BAND_ROWS)


# ---------------------------------------------------------------- decoder side


def apply(pixels: np.ndarray, filt: LoopFilter) -> np.ndarray:
    """Filter the colour channels of an (h, w, c) or (h, w) uint8 image; alpha is untouched."""
    flat = pixels.ndim == 2
    image = pixels[..., None] if flat else pixels
    colour_channels = 1 if image.shape[2] == 1 else 3
    if colour_channels != filt.channels:
        raise LoopFilterError(f"chunk 'fLTR': filters {filt.channels} channels, the image has {colour_channels}")
    from .loop_filter_kernels import filter_band

    colour = image[..., :colour_channels]
    out = image.copy()
    height, width = colour.shape[:2]
    coefficients = np.ascontiguousarray(filt.coefficients, np.int64)

    def filter_rows(y0: int, y1: int) -> None:
        z = _band(colour, y0, y1, np.int32)
        cls = _classes(*_activity_direction(z, y1 - y0, width), filt.thresholds, filt.direction_classes)
        planes = np.ascontiguousarray(z.transpose(2, 0, 1))
        out[y0:y1, :, :colour_channels] = filter_band(planes, cls, coefficients, filt.shift, _OWN, _CROSS, MARGIN)

    bands = list(_bands(height))
    workers = min(len(bands), os.cpu_count() or 1, MAX_THREADS)
    if workers == 1:
        for y0, y1 in bands:
            filter_rows(y0, y1)
    else:  # the compiled kernel releases the GIL: bands run side by side, each writing its own rows
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda band: filter_rows(*band), bands))
    return out[..., 0] if flat else out


def _sorted_classes(cls: np.ndarray, n_cls: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel order grouped by class, and each class's start/end in that order."""
    flat = cls.ravel()
    return np.argsort(flat, kind="stable"), np.concatenate([[0], np.cumsum(np.bincount(flat, minlength=n_cls))])


# ---------------------------------------------------------------- chunk payload


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _golomb_bits(values, k: int) -> int:
    return sum(2 * ((_zigzag(v) + (1 << k)).bit_length() - 1) + 1 - k for v in values)


def _residuals(coefficients: np.ndarray) -> list[int]:
    """Each class's coefficients minus the previous class's (same channel); classes are alike."""
    pred = np.zeros_like(coefficients)
    pred[:, 1:] = coefficients[:, :-1]
    return [int(v) for v in (coefficients - pred).ravel()]


def pack(filt: LoopFilter) -> bytes:
    values = _residuals(filt.coefficients)
    k = min(range(16), key=lambda k: _golomb_bits(values, k))
    bits = []
    for v in values:  # order-k exponential Golomb of the zigzagged value, MSB first
        u = _zigzag(v) + (1 << k)
        n = u.bit_length()
        bits.append("0" * (n - 1 - k) + format(u, "b"))
    stream = "".join(bits)
    stream += "0" * (-len(stream) % 8)
    body = int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""
    head = _HEAD.pack(VERSION, filt.channels, filt.shift, filt.activity_classes, filt.direction_classes, k)
    return head + b"".join(struct.pack(">I", t) for t in filt.thresholds) + body


def unpack(payload: bytes, channels: int) -> LoopFilter:
    """Parse an fLTR payload for an image with `channels` colour channels; LoopFilterError if invalid."""
    def bad(why: str) -> LoopFilterError:
        return LoopFilterError(f"chunk 'fLTR': {why}")

    if len(payload) < _HEAD.size:
        raise bad(f"{len(payload)} bytes, shorter than its {_HEAD.size}-byte head")
    version, n_channels, shift, n_act, n_dir, k = _HEAD.unpack_from(payload)
    if version != VERSION:
        raise bad(f"version {version} is not supported (this decoder knows {VERSION})")
    if n_channels != channels:
        raise bad(f"filters {n_channels} colour channel(s), the image has {channels}")
    if not 1 <= shift <= 15:
        raise bad(f"shift {shift} outside 1..15")
    if not 1 <= n_act <= MAX_ACTIVITY_CLASSES:
        raise bad(f"{n_act} activity classes, outside 1..{MAX_ACTIVITY_CLASSES}")
    if n_dir not in DIRECTION_CLASSES:
        raise bad(f"{n_dir} direction classes; valid: 1, 3")
    if k > 15:
        raise bad(f"Golomb order {k} outside 0..15")
    pos = _HEAD.size + 4 * (n_act - 1)
    if len(payload) < pos:
        raise bad(f"{len(payload)} bytes, too short for {n_act - 1} activity thresholds")
    thresholds = struct.unpack_from(f">{n_act - 1}I", payload, _HEAD.size)
    if any(b < a for a, b in zip(thresholds, thresholds[1:])):
        raise bad("activity thresholds are not in non-decreasing order")
    count = channels * n_act * n_dir * feature_count(channels)
    body = payload[pos:]
    longest = 2 * 31 + 1 + k  # bits of one code with the most leading zeros allowed
    if len(body) > (count * longest + 7) // 8:  # checked before the body becomes one big integer
        raise bad(f"{len(body)} bytes of coefficients, more than {count} codes can take (data after the coefficients)")
    value = int.from_bytes(body, "big")
    total = 8 * len(body)
    at = 0
    residuals = []

    def read(n: int) -> int:
        nonlocal at
        if at + n > total:
            raise bad(f"coefficient data ends after {len(residuals)} of {count} coefficients")
        out = (value >> (total - at - n)) & ((1 << n) - 1)
        at += n
        return out

    for _ in range(count):
        zeros = 0
        while read(1) == 0:
            zeros += 1
            if zeros > 31:
                raise bad("a coefficient code has more than 31 leading zeros")
        u = ((1 << (zeros + k)) | read(zeros + k)) - (1 << k)
        residuals.append(u >> 1 if u % 2 == 0 else -((u + 1) >> 1))
    if total - at >= 8 or (at < total and read(total - at) != 0):
        raise bad("data after the coefficients (at most 7 zero padding bits may follow)")
    coefficients = np.cumsum(np.array(residuals, np.int64).reshape(channels, n_act * n_dir, -1), axis=1)
    if np.abs(coefficients).max(initial=0) > MAX_COEFFICIENT:
        raise bad(f"a coefficient exceeds ±{MAX_COEFFICIENT}")
    return LoopFilter(channels, n_act, n_dir, tuple(thresholds), coefficients, shift)


# ---------------------------------------------------------------- encoder side


def _band_activity(colour: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """(activity, direction) of every band, computed once for the thresholds and the classes
    (int32 + int8 per pixel, a fraction of the image's own float features)."""
    width = colour.shape[1]
    return [_activity_direction(_band(colour, y0, y1), y1 - y0, width) for y0, y1 in _bands(colour.shape[0])]


def _activity_thresholds(activity: list[tuple[np.ndarray, np.ndarray]], n_act: int) -> tuple[int, ...]:
    """Quantile edges of the activity measure (computed on the decoded image, as the decoder will)."""
    if n_act == 1:
        return ()
    values = np.concatenate([a.ravel() for a, _ in activity])
    return tuple(int(v) for v in np.quantile(values, np.arange(1, n_act) / n_act, method="lower"))


FINE_ACTIVITY = max(a for a, _ in CANDIDATES)  # every candidate's thresholds are a subset of these


@dataclass
class _Stats:
    """Normal equations per channel and class: A'A, A't, t't (t = original - decoded), pixels."""

    ata: np.ndarray
    atb: np.ndarray
    tt: np.ndarray
    count: np.ndarray


def _fine_statistics(dec: np.ndarray, orig: np.ndarray, activity, thresholds) -> _Stats:
    channels = dec.shape[2]
    n_cls, n_feat = FINE_ACTIVITY * 3, feature_count(channels)
    st = _Stats(np.zeros((channels, n_cls, n_feat, n_feat)), np.zeros((channels, n_cls, n_feat)),
                np.zeros((channels, n_cls)), np.zeros(n_cls, np.int64))
    height, width = dec.shape[:2]
    for (y0, y1), (act, direction) in zip(_bands(height), activity):
        z = _band(dec, y0, y1)
        h = y1 - y0
        order, bounds = _sorted_classes(_classes(act, direction, thresholds, 3), n_cls)
        st.count += np.diff(bounds)
        for c in range(channels):
            a = _features(z, c, h, width)[:, order]
            t = (orig[y0:y1, :, c].astype(np.float64) - dec[y0:y1, :, c]).ravel()[order]
            for j in range(n_cls):
                s = slice(bounds[j], bounds[j + 1])
                st.ata[c, j] += a[:, s] @ a[:, s].T
                st.atb[c, j] += a[:, s] @ t[s]
                st.tt[c, j] += t[s] @ t[s]
    return st


def _merge(fine: _Stats, n_act: int, n_dir: int) -> _Stats:
    """Statistics of a coarser layout: its classes are unions of fine classes."""
    fine_act = np.arange(FINE_ACTIVITY * 3) // 3
    fine_dir = np.arange(FINE_ACTIVITY * 3) % 3
    target = (fine_act // (FINE_ACTIVITY // n_act)) * n_dir + (fine_dir if n_dir == 3 else 0)
    n_cls = n_act * n_dir

    def add(x, axis):
        out = np.zeros(x.shape[:axis] + (n_cls,) + x.shape[axis + 1:])
        np.add.at(out, (slice(None),) * axis + (target,), x)
        return out

    return _Stats(add(fine.ata, 1), add(fine.atb, 1), add(fine.tt, 1), add(fine.count, 0).astype(np.int64))


def _solve(st: _Stats) -> tuple[np.ndarray, float]:
    """Integer coefficients per channel and class, and the squared error they leave (estimated:
    exact before the output's rounding, which adds about 1/12 per filtered sample)."""
    channels, n_cls, n_feat = st.atb.shape
    coefficients = np.zeros((channels, n_cls, n_feat), np.int64)
    sse = float(st.tt.sum())
    for c in range(channels):
        for j in range(n_cls):
            if st.count[j] < 4 * n_feat:  # too few samples to trust a fit: leave the class unfiltered
                continue
            ata = st.ata[c, j]
            ridge = 1e-6 * np.trace(ata) / n_feat + 1e-9
            w = np.linalg.solve(ata + ridge * np.eye(n_feat), st.atb[c, j])
            q = np.clip(np.round(w * (1 << SHIFT)), -MAX_COEFFICIENT, MAX_COEFFICIENT)
            wq = q / (1 << SHIFT)
            after = st.tt[c, j] - 2 * wq @ st.atb[c, j] + wq @ ata @ wq + st.count[j] / 12
            if after < st.tt[c, j]:
                coefficients[c, j] = q.astype(np.int64)
                sse += after - st.tt[c, j]
    return coefficients, sse


@dataclass(frozen=True)
class Choice:
    filt: LoopFilter
    payload: bytes
    gain_db: float  # estimated PSNR gain over the colour channels
    score: float  # gain_db minus the bytes' cost in dB (DB_PER_LOG_RATE)


def choose(decoded: np.ndarray, original: np.ndarray, file_bytes: int, force: bool = False) -> Choice | None:
    """Fit every candidate layout and return the best-scoring; None when none scores above 0
    (force: the best even so). file_bytes: the file's size without the filter."""
    dec = decoded[..., None] if decoded.ndim == 2 else decoded
    orig = original[..., None] if original.ndim == 2 else original
    channels = 1 if dec.shape[2] == 1 else 3
    dec, orig = dec[..., :channels], orig[..., :channels]
    activity = _band_activity(dec)
    fine_thresholds = _activity_thresholds(activity, FINE_ACTIVITY)
    fine = _fine_statistics(dec, orig, activity, fine_thresholds)
    before = float(fine.tt.sum())
    best = None
    for n_act, n_dir in CANDIDATES:
        step = FINE_ACTIVITY // n_act
        thresholds = fine_thresholds[step - 1::step]
        coefficients, after = _solve(_merge(fine, n_act, n_dir))
        filt = LoopFilter(channels, n_act, n_dir, thresholds, coefficients)
        payload = pack(filt)
        gain = 10 * math.log10(before / after) if before > 0 and after > 0 else 0.0
        cost = DB_PER_LOG_RATE * math.log1p((len(payload) + 12) / max(file_bytes, 1))
        choice = Choice(filt, payload, gain, gain - cost)
        if best is None or choice.score > best.score:
            best = choice
    if not force and not best.score > 0:
        return None
    return best
