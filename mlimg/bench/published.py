"""Published Kodak RD curves (CompressAI result files) to compare against and draw in the plots."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .aggregate import Curve
from .images import find_shared


@dataclass(frozen=True)
class Role:
    key: str
    label: str
    stems: tuple[str, ...]  # file stems to try, in order of preference
    bd: bool  # BD-rate of every run curve against this one goes into the summary


ROLES = (
    Role("vtm", "VTM 4:4:4 intra (published)", ("vtm",), True),
    Role("bpg", "BPG 4:4:4 (published)", ("bpg_444_x265_ycbcr", "bpg444", "bpg"), True),
    Role("balle2018", "Ballé 2018 hyperprior (published)", ("compressai-bmshj2018-hyperprior_mse_cpu", "paper-bmshj2018-hyperprior"), False),
    Role("cheng2020", "Cheng 2020 anchor (published)", ("compressai-cheng2020-anchor_mse_cpu", "paper-cheng2020-anchor"), False),
    Role("jpeg-published", "JPEG, Pillow 7 (published)", ("jpeg",), False),
)


def default_dir() -> Path | None:
    return find_shared("anchors", "kodak")


def _linear_ms_ssim(results: dict) -> list[float] | None:
    if "ms-ssim-rgb" in results:
        return [float(v) for v in results["ms-ssim-rgb"]]
    if "ms-ssim" in results:
        return [float(v) for v in results["ms-ssim"]]
    if "ms-ssim-db-rgb" in results:  # -10 log10(1 - x)
        return [1.0 - 10.0 ** (-float(v) / 10.0) for v in results["ms-ssim-db-rgb"]]
    return None


def load_curve(path: Path, key: str, label: str) -> Curve | None:
    """One CompressAI-format file as a curve; None if it is not in that format."""
    try:
        data = json.loads(Path(path).read_text())
        results = data["results"]
        bpp = [float(v) for v in results["bpp"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    psnr = [float(v) for v in results.get("psnr-rgb", results.get("psnr", [math.nan] * len(bpp)))]
    ms_ssim = _linear_ms_ssim(results) or [math.nan] * len(bpp)
    if not (len(psnr) == len(ms_ssim) == len(bpp)):
        return None
    curve = Curve(key, label, "published")
    curve.params = [f"{b:.3f} bpp" for b in bpp]
    curve.values = {"bpp": bpp, "psnr": psnr, "ms_ssim": ms_ssim}
    return curve


def load(directory: str | Path | None) -> tuple[dict[str, Curve], str | None]:
    """The curves of ROLES found in directory (default: the shared Kodak anchors) and the folder used."""
    folder = Path(directory) if directory else default_dir()
    if folder is None or not folder.is_dir():
        return {}, None
    curves = {}
    for role in ROLES:
        for stem in role.stems:
            curve = load_curve(folder / f"{stem}.json", role.key, role.label)
            if curve is not None:
                curves[role.key] = curve
                break
    return curves, str(folder)


def bd_keys(curves: dict[str, Curve]) -> list[str]:
    return [r.key for r in ROLES if r.bd and r.key in curves]
