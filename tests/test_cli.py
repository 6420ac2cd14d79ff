"""The `mlimg` command line: info, encode, decode, methods, exit codes and messages."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import random_image, random_pixels
from PIL import Image

from mlimg import cli


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "in.png"
    random_image("RGB", 6, 4).save(path)
    return path


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_info_decode(capsys, tmp_path, png):
    encoded, decoded = tmp_path / "a.mlimg", tmp_path / "b.png"
    code, out, _ = run(capsys, "encode", png, encoded, "--method", "raw")
    assert code == 0 and "bytes" in out and "bpp" in out
    code, out, _ = run(capsys, "info", encoded)
    assert code == 0
    assert "mlimg 1.0, 6x4 RGB" in out and "raw (version 1)" in out
    assert "RAWD" in out and "72 bytes" in out
    code, out, _ = run(capsys, "info", "--json", encoded)
    facts = json.loads(out)
    assert facts["bytes"] == encoded.stat().st_size
    assert facts["bpp"] == pytest.approx(8 * facts["bytes"] / 24)
    assert [c["type"] for c in facts["chunks"]] == ["MHDR", "RAWD", "MEND"]
    code, out, _ = run(capsys, "decode", encoded, decoded)
    assert code == 0
    with Image.open(decoded) as im:
        assert np.array_equal(np.asarray(im), random_pixels("RGB", 6, 4))


def test_methods_lists_raw(capsys):
    code, out, _ = run(capsys, "methods")
    assert code == 0 and "raw (version 1, lossless)" in out


def test_bad_input_files_exit_1(capsys, tmp_path, png):
    code, _, err = run(capsys, "info", png)
    assert code == 1 and "not an mlimg file" in err and "Traceback" not in err
    code, _, err = run(capsys, "info", tmp_path / "missing.mlimg")
    assert code == 1 and "missing.mlimg" in err
    broken = tmp_path / "broken.mlimg"
    run(capsys, "encode", png, broken)
    broken.write_bytes(broken.read_bytes()[:-20])
    code, _, err = run(capsys, "decode", broken, tmp_path / "x.png")
    assert code == 1 and "truncated" in err


def test_info_reports_undecodable_files(capsys, tmp_path):
    from mlimg import container

    truncated = tmp_path / "t.mlimg"
    truncated.write_bytes(container.build(container.FileHeader(2, 1, "L", "raw"), [("RAWD", b"ab")])[:-12])
    code, out, _ = run(capsys, "info", truncated)
    assert code == 1 and "truncated: file ends" in out and "RAWD" in out
    unknown = tmp_path / "u.mlimg"
    unknown.write_bytes(container.build(container.FileHeader(2, 1, "L", "future-method", 3), [("FUTR", b"x")]))
    code, out, _ = run(capsys, "info", "--json", unknown)
    facts = json.loads(out)
    assert code == 1 and facts["method"] == "future-method" and "unknown method" in facts["problem"]
    assert [c["type"] for c in facts["chunks"]] == ["MHDR", "FUTR", "MEND"]


def test_usage_errors_exit_2(capsys, tmp_path, png):
    out_path = tmp_path / "a.mlimg"
    code, _, err = run(capsys, "encode", png, out_path, "--method", "nope")
    assert code == 2 and "valid methods" in err
    code, _, err = run(capsys, "encode", png, out_path, "--option", "noequals")
    assert code == 2 and "key=value" in err
    code, _, err = run(capsys, "encode", png, out_path, "-o", "colours=4")
    assert code == 2 and "valid options" in err
    run(capsys, "encode", png, out_path, "--method", "raw")
    code, _, err = run(capsys, "decode", out_path, tmp_path / "b.png", "-o", "iterations=2")
    assert code == 2 and "unknown decode option" in err
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "text, value", [("3", 3), ("0.5", 0.5), ("true", True), ("off", False), ("none", None), ("abc", "abc")]
)
def test_option_values_are_typed(text, value):
    assert cli.parse_options([f"k={text}"]) == {"k": value}


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "mlimg.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "info" in result.stdout and "encode" in result.stdout and "decode" in result.stdout


def test_help_imports_no_heavy_module():
    code = (
        "import sys\nfrom mlimg import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'sklearn', 'mlimg.bench', 'mlimg.train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
