"""Registered model weights: safetensors files + mlimg/weights/registry.json.

registry.json:
  {"default": {"cae": "<id>"},
   "models": {"<id>": {"method", "file", "sha256", "config", "training": {...}}}}

A weights file holds the float network tensors ("model.<name>") and, for
methods with stored probability tables, integer tensors ("cdf.<name>").
Encoded files carry (id, sha256) in their MODL chunk; decoding with weights
whose sha256 differs is refused with an OSError naming both.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
REGISTRY = WEIGHTS_DIR / "registry.json"

_extra: dict[str, dict] = {}  # models registered at run time (tests, experiments)
_loaded: dict[str, "LoadedModel"] = {}


class LoadedModel:
    """A network in eval mode plus the integer tables stored beside it."""

    def __init__(self, model_id: str, sha256: str, net, tables: dict):
        self.id = model_id
        self.sha256 = sha256
        self.net = net
        self.tables = tables  # name -> numpy int array


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def registry() -> dict:
    reg = json.loads(REGISTRY.read_text()) if REGISTRY.exists() else {"default": {}, "models": {}}
    for model_id, entry in _extra.items():
        reg["models"][model_id] = entry
        reg["default"].setdefault(entry["method"], model_id)
    return reg


def register(model_id: str, method: str, path: Path, config: dict) -> str:
    """Register a weights file at run time (not persisted). Returns its sha256."""
    sha = sha256_file(path)
    _extra[model_id] = {"method": method, "file": str(Path(path).resolve()), "sha256": sha, "config": config}
    _loaded.pop(model_id, None)
    return sha


def unregister(model_id: str) -> None:
    """Forget a model registered at run time (tests clean up so later code sees only shipped models)."""
    _extra.pop(model_id, None)
    _loaded.pop(model_id, None)


def default_model(method: str) -> str | None:
    return registry()["default"].get(method)


def model_ids(method: str) -> list[str]:
    return sorted(k for k, v in registry()["models"].items() if v["method"] == method)


def load(model_id: str, method: str, expected_sha256: bytes | None = None) -> LoadedModel:
    """Load (cached) weights by id; OSError if unknown, missing, or not the expected sha256."""
    entry = registry()["models"].get(model_id)
    if entry is None or entry["method"] != method:
        have = ", ".join(model_ids(method)) or "none"
        raise OSError(f"{method} model {model_id!r} is not installed (installed: {have})")
    if expected_sha256 is not None and bytes.fromhex(entry["sha256"]) != bytes(expected_sha256):
        raise OSError(
            f"{method} model {model_id!r}: the file expects weights with sha256 {bytes(expected_sha256).hex()}, "
            f"the installed weights have sha256 {entry['sha256']}"
        )
    cached = _loaded.get(model_id)
    if cached is not None and cached.sha256 == entry["sha256"]:
        return cached
    path = Path(entry["file"])
    if not path.is_absolute():
        path = WEIGHTS_DIR / path
    if not path.exists():
        raise OSError(f"{method} model {model_id!r}: weights file {path} is missing")
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise OSError(f"{method} model {model_id!r}: weights file {path.name} has sha256 {actual}, registry says {entry['sha256']}")
    loaded = LoadedModel(model_id, actual, *_read_weights(path, entry["config"]))
    _loaded[model_id] = loaded
    return loaded


def _read_weights(path: Path, config: dict):
    from safetensors.numpy import load_file as load_numpy
    from safetensors.torch import load_file

    from .models import build

    tensors = load_file(str(path))
    try:
        net = build(config)
    except ValueError as exc:  # e.g. channel groups that do not partition the latent
        raise OSError(f"weights file {path.name}: its {config.get('arch')} config is invalid ({exc})") from None
    missing, unexpected = net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=False)
    missing = [k for k in missing if not k.startswith(getattr(net, "optional_weights", ()))]
    if missing or unexpected:
        raise OSError(f"weights file {path.name} does not fit its {config.get('arch')} config "
                      f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    net.eval()
    tables = {k[4:]: v for k, v in load_numpy(str(path)).items() if k.startswith("cdf.")}
    return net, tables


# float16 storage (`half`) keeps a tensor in float32 when rounding it would move any value by more
# than this fraction of the tensor's largest magnitude (tiny reparametrisation offsets, subnormals)
# or when it would overflow float16.
HALF_TOLERANCE = 2.0 ** -10
HALF_MAX = 60000.0


def half_where_exact(tensor):
    """`tensor` in float16 when that is exact enough (HALF_TOLERANCE), else in float32."""
    t = tensor.detach().float().cpu()
    if not t.numel():
        return t
    scale = float(t.abs().max())
    if scale == 0.0:
        return t.half()
    if scale > HALF_MAX:
        return t
    error = float((t.half().float() - t).abs().max())
    return t.half() if error <= HALF_TOLERANCE * scale else t


def round_to_half(net) -> None:
    """Replace NET's float tensors by the values a float16 weights file will hold, so that the
    integer tables computed from it next describe exactly the network a decoder loads."""
    import torch

    with torch.no_grad():
        for value in net.state_dict(keep_vars=True).values():
            if value.is_floating_point():
                value.copy_(half_where_exact(value).float())


def save_weights(path: Path, net, tables: dict, config: dict, half: bool = False) -> str:
    """Write a weights file (float network + integer tables); returns its sha256.

    half: network tensors in float16 where exact enough (half_where_exact; about half the bytes);
    call round_to_half(net) before computing `tables`. A decoder converts them back to float32."""
    from safetensors.torch import save_file
    import torch

    def stored(v):
        if half and v.is_floating_point():
            return half_where_exact(v).contiguous()
        return v.detach().float().contiguous().cpu()

    tensors = {f"model.{k}": stored(v) for k, v in net.state_dict().items()}
    for name, table in tables.items():  # int32, or uint16 for large tables that fit it
        dtype = np.uint16 if np.asarray(table).dtype == np.uint16 else np.int32
        tensors[f"cdf.{name}"] = torch.from_numpy(np.ascontiguousarray(table, dtype=dtype))
    save_file(tensors, str(path), metadata={"config": json.dumps(config)})
    return sha256_file(path)


def integer_tables(net, data: Path | None = None) -> dict:
    """The integer tables a decoder needs beside the float network (computed once, at export).

    cae with `data` (a folder of training images) also gets the context tables of its
    version-2 coding, measured on the first CONTEXT_IMAGES of them (sorted by name)."""
    if net.config["arch"] == "cae":
        from .integer import factorized_freqs

        tables = {"prior": factorized_freqs(net.prior)}
        if data is not None:
            from ..codecs.cae import CONTEXT_IMAGES, context_tables
            from ..train import load_images

            tables.update(context_tables(net, tables["prior"], load_images(Path(data), CONTEXT_IMAGES)))
        return tables
    if net.config["arch"] in ("gmm", "gan"):  # gan carries its frozen gmm's tables
        from .gmm_entropy import export_tables

        return export_tables(net)
    raise ValueError(f"no integer tables for architecture {net.config['arch']!r}")


def export_checkpoint(method: str, run_dir: Path, data: Path | None = None, half: bool = False) -> str:
    """Turn a training checkpoint into shipped weights: integer tables (cae's context tables
    measured on `data`, see integer_tables), sha256, registry entry. `half`: float16 tensors
    where exact enough (save_weights), the tables computed from the rounded network.

    The previous default weights of the same method are removed so the package stays small.
    """
    from safetensors.torch import load_file

    from .models import ARCH_KEYS, build

    meta = json.loads((run_dir / "checkpoint.json").read_text())
    config = {k: meta["config"][k] for k in ARCH_KEYS if k in meta["config"]}
    net = build(config)
    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    net.eval()
    if half:
        round_to_half(net)
    tables = integer_tables(net, data)
    tmp_path = new_weights_path()
    sha = save_weights(tmp_path, net, tables, config, half=half)
    entry = {"config": config,
             "training": {"command": meta.get("command"), "resumes": meta.get("resumes", []), "steps": meta["step"],
                          "train_config": meta["config"]}}
    if "entropy_fit" in meta:  # mlimg/train_entropy.py: the entropy model refitted after training
        entry["training"]["entropy_fit"] = meta["entropy_fit"]
    if half:
        entry["network_dtype"] = "float16 where exact enough"
    if "context_tables" in tables:
        from ..codecs.cae import CONTEXT_IMAGES

        entry["context_tables"] = {"data": str(data), "images": CONTEXT_IMAGES}
    return install_default(method, tmp_path, sha, entry)


def new_weights_path() -> Path:
    """A fresh temporary file in the weights folder for an exporter to write (install_default
    then moves it into place, so a half-written file never carries a model id)."""
    import tempfile

    WEIGHTS_DIR.mkdir(exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=WEIGHTS_DIR, suffix=".tmp", delete=False) as tmp:
        return Path(tmp.name)


def install_default(method: str, tmp_path: Path, sha: str, entry: dict) -> str:
    """Install the weights file at `tmp_path` (sha256 `sha`) as METHOD's default model, with
    registry `entry` beside method, file and sha256; returns its id. The previous default's
    file is removed so the package stays small."""
    model_id = f"{method}-v1-{sha[:8]}"
    final = WEIGHTS_DIR / f"{model_id}.safetensors"
    tmp_path.chmod(0o644)  # NamedTemporaryFile creates 0600
    tmp_path.replace(final)
    reg = json.loads(REGISTRY.read_text()) if REGISTRY.exists() else {"default": {}, "models": {}}
    old = reg["default"].get(method)
    if old and old != model_id and old in reg["models"]:
        (WEIGHTS_DIR / reg["models"].pop(old)["file"]).unlink(missing_ok=True)
    reg["models"][model_id] = {"method": method, "file": final.name, "sha256": sha, **entry}
    reg["default"][method] = model_id
    # Write beside it and rename: a process reading the registry meanwhile (a running bench)
    # sees the old file or the new one, never half of one.
    tmp = REGISTRY.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(reg, indent=1) + "\n")
    os.replace(tmp, REGISTRY)
    return model_id
