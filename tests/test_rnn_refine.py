"""rnn bit refinement (`refine=`, mlimg/nn/rnn_refine.py) with a tiny random model: tiles decode
exactly as the whole image, refinement lowers the error, and refined files are ordinary files."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import smooth_image
from test_rnn import TINY, load, save, tiny_model  # noqa: F401  (the fixture)

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _padded(img: np.ndarray):
    from mlimg.codecs.rnn import _to_rgb_float

    x = _to_rgb_float(img, "RGB")
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None] - 0.5


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_tile_decodes_its_pixels_exactly_as_the_whole_image(cell):
    from mlimg.nn.rnn_models import RNNCodecNet, hard_binarise
    from mlimg.nn.rnn_refine import STRIDE, tile_forward, tile_window

    torch.manual_seed(3)
    net = RNNCodecNet({**TINY, "cell": cell}).eval()
    xt = _padded(smooth_image(96, 128))  # 6 x 8 latent positions
    enc, dec = net.initial_states()
    recon = torch.zeros_like(xt)
    with torch.no_grad():
        for t in range(3):  # states and gains of a later iteration
            code, enc = net.encode_step(xt, recon, enc, t)
            bits = hard_binarise(code)
            gain = net.block_gain(recon, t)
            whole, new_dec = net.decode_step(bits, recon, dec, t)
            for box in [(2, 5, 3, 6), (0, 3, 0, 4), (4, 6, 5, 8)]:  # inner, corner, far corner
                window, (rows, cols) = tile_window(box, 6, 8)
                part = tile_forward(net, bits[..., window[0] : window[1], window[2] : window[3]], recon, dec, gain, window)
                pix = part[..., rows.start * STRIDE : rows.stop * STRIDE, cols.start * STRIDE : cols.stop * STRIDE]
                ref = whole[..., box[0] * STRIDE : box[1] * STRIDE, box[2] * STRIDE : box[3] * STRIDE]
                assert torch.allclose(pix, ref, atol=1e-5), (t, box, float((pix - ref).abs().max()))
            recon, dec = whole, new_dec


@pytest.mark.parametrize("tile", [None, 3])
def test_refinement_lowers_the_error_of_the_first_iteration_and_of_the_last(monkeypatch, tile):
    from mlimg.codecs.rnn import decode_image, encode_bits
    from mlimg.nn import rnn_refine
    from mlimg.nn.rnn_models import RNNCodecNet

    if tile:
        monkeypatch.setattr(rnn_refine, "TILE", tile)
    torch.manual_seed(5)
    net = RNNCodecNet(TINY).eval()
    img = smooth_image(80, 112)
    x = img.astype(np.float32) / 255.0

    def error(bits):
        return float(np.mean((decode_image(net, bits, 5, 7, fast=False) - x) ** 2))

    plain = encode_bits(net, x, 4, fast=False)
    refined = encode_bits(net, x, 4, refine=8)
    assert refined.shape == plain.shape and refined.dtype == np.uint8
    assert not np.array_equal(refined, plain)
    assert error(refined[:1]) < error(plain[:1])  # never worse by construction; a random net gains
    assert error(refined) < error(plain)
    assert all(p.requires_grad for p in net.parameters())  # the shared model is left as found


def test_refined_bits_that_end_worse_give_way_to_the_encoders_own(monkeypatch):
    """Greedy refinement can leave the last iteration worse: then the plain bits are written."""
    from mlimg.codecs.rnn import encode_bits
    from mlimg.nn import rnn_refine
    from mlimg.nn.rnn_models import RNNCodecNet

    torch.manual_seed(5)
    net = RNNCodecNet(TINY).eval()
    x = smooth_image(40, 56).astype(np.float32) / 255.0
    plain = encode_bits(net, x, 3)
    inverted = 1 - plain  # every bit flipped: far from the image
    monkeypatch.setattr(rnn_refine, "encode_bits_refined", lambda *args, **kw: inverted)
    assert np.array_equal(encode_bits(net, x, 3, refine=5), plain)


@pytest.mark.parametrize("mode,shape", [("RGB", (40, 56, 3)), ("L", (17, 33)), ("RGBA", (20, 24, 4))])
def test_refined_files_are_ordinary_repeatable_rnn_files(tiny_model, mode, shape):  # noqa: F811
    img = smooth_image(*shape[:2])
    if mode == "L":
        img = img[..., 0]
    elif mode == "RGBA":
        img = np.concatenate([img, np.full(shape[:2] + (1,), 200, np.uint8)], axis=2)
    a, b = save(img, quality=30, adaptive=False, refine=3), save(img, quality=30, adaptive=False, refine=3)
    assert a == b  # no randomness: repeatable on one machine
    out = load(a)
    assert out.shape == img.shape and np.array_equal(out, load(a))
    if mode == "RGBA":
        assert np.array_equal(out[..., 3], img[..., 3])


@pytest.mark.parametrize("bad", [-1, 201, 2.5, "ten"])
def test_bad_refine_values_list_the_valid_range(tiny_model, bad):  # noqa: F811
    with pytest.raises(ValueError, match="0..200"):
        save(smooth_image(16, 16), refine=bad)
