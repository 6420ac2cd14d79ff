"""gan codec: gmm's bitstream decoded by a generator with a realism knob (tiny random model)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import mlimg  # noqa: F401  (registers the format)
from mlimg import codecs
from mlimg.codecs.base import CodecError, Header

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"arch": "gan", "N": 8, "M": 8, "K": 3, "lambdas": [0.001, 0.01, 0.1], "realism": True}


@pytest.fixture(scope="module")
def tiny_gan(tmp_path_factory):
    """A tiny GAN whose generator differs from g_s once realism > 0 (texture branch non-zero)."""
    from mlimg.nn import store
    from mlimg.nn.models import build

    torch.manual_seed(99)
    net = build(TINY)
    with torch.no_grad():
        net.g_a[-2].weight.mul_(20.0)
        net.generator.init_from_synthesis(net.g_s)
        net.generator.texture[-1].weight.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("weights") / "gan-tiny.safetensors"
    sha = store.save_weights(path, net, store.integer_tables(net), TINY)
    store.register("gan-test-tiny", "gan", path, TINY)
    yield "gan-test-tiny", sha
    store.unregister("gan-test-tiny")


def _image(h=40, w=56, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 90 * np.sin(xx / (4 + c) + yy / 6) for c in range(3)], -1) + rng.normal(0, 10, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _encode(img, **opts):
    buf = io.BytesIO()
    img.save(buf, format="MLIMG", method="gan", **opts)
    return buf.getvalue()


def _decode(data, **decode_options):
    im = Image.open(io.BytesIO(data))
    im.decode_options.update(decode_options)
    im.load()
    return np.asarray(im)


def test_round_trip_and_the_realism_knob(tiny_gan):
    img = _image()
    data = _encode(img, model=tiny_gan[0], quality=40)
    default = _decode(data)
    assert default.shape == (40, 56, 3)
    assert np.array_equal(default, _decode(data))  # repeatable
    assert np.array_equal(default, _decode(data, realism=1.0))  # the default is realism 1
    assert not np.array_equal(_decode(data, realism=0.0), default)  # the knob changes the pixels


def test_gan_shares_gmm_quality_mapping_version(tiny_gan):
    """gan writes gmm's bitstream, so its method version follows gmm's quality -> gain mapping."""
    assert codecs.get("gan").version == codecs.get("gmm").version == 2
    im = Image.open(io.BytesIO(_encode(_image(), model=tiny_gan[0], quality=1)))
    assert im.info["method_version"] == 2 and im.info["quality"] == 1


def test_realism_zero_is_the_generator_without_texture(tiny_gan):
    """At realism 0 the (untrained) beta layers are zero and the texture branch is gated off:
    the generator equals the gmm synthesis it was initialised from."""
    from mlimg.codecs import gmm as gmm_mod
    from mlimg.nn import store

    codec = codecs.get("gan")
    opts = codec.validate_options("RGB", {"model": tiny_gan[0], "quality": 60})
    enc = codec.encode(np.asarray(_image(24, 40)), "RGB", opts)
    header = Header(40, 24, "RGB", "gan", 1)
    via_gan = codec.decode(header, enc.chunks, model=enc.model, realism=0.0)
    via_gs = codec.decode_with(header, enc.chunks, enc.model, lambda net: net.g_s)
    assert np.array_equal(via_gan, via_gs)
    assert isinstance(store.load(tiny_gan[0], "gan").net.generator, torch.nn.Module)
    assert gmm_mod.GmmCodec.chunk_specs == codec.chunk_specs  # the same bitstream as gmm


@pytest.mark.parametrize("bad", [-0.1, 1.5, "high", True, None])
def test_bad_realism_is_a_value_error_listing_the_range(tiny_gan, bad):
    data = _encode(_image(16, 16), model=tiny_gan[0])
    with pytest.raises(ValueError, match="realism.*0.*1"):
        _decode(data, realism=bad)


def test_unknown_decode_option_lists_realism(tiny_gan):
    data = _encode(_image(16, 16), model=tiny_gan[0])
    with pytest.raises(ValueError, match="valid decode options: realism"):
        _decode(data, sharpness=2)


def test_gan_file_names_its_own_model_and_refuses_a_gmm_model_id(tiny_gan):
    codec = codecs.get("gan")
    opts = codec.validate_options("RGB", {"model": tiny_gan[0], "quality": 30})
    enc = codec.encode(np.asarray(_image(16, 24)), "RGB", opts)
    assert enc.model[0] == tiny_gan[0]
    with pytest.raises(OSError, match="not installed"):
        codec.decode(Header(24, 16, "RGB", "gan", 1), enc.chunks, model=("gmm-some-id", enc.model[1]))
    with pytest.raises(CodecError, match="HLAT"):
        codec.decode(Header(24, 16, "RGB", "gan", 1), [c for c in enc.chunks if c[0] != "HLAT"], model=enc.model)


def test_cli_decode_realism(tiny_gan, tmp_path):
    from mlimg import cli

    src = tmp_path / "in.mlimg"
    src.write_bytes(_encode(_image(16, 24), model=tiny_gan[0]))
    assert cli.main(["decode", str(src), str(tmp_path / "r0.png"), "--realism", "0"]) == 0
    assert cli.main(["decode", str(src), str(tmp_path / "r1.png"), "--realism", "1"]) == 0
    assert cli.main(["decode", str(src), str(tmp_path / "bad.png"), "--realism", "2"]) != 0
    r0, r1 = (np.asarray(Image.open(tmp_path / f"r{i}.png")) for i in (0, 1))
    assert r0.shape == r1.shape == (16, 24, 3) and not np.array_equal(r0, r1)
