"""Coverage-guided fuzzing of Image.open(...).load() for .mlimg files (atheris / libFuzzer). Not run in CI.

Setup and run (from the repository root):

    pip install atheris
    python fuzz/fuzz_open.py --make-corpus fixtures fuzz-corpus      # seed corpus: every fixture's input.mlimg
    python fuzz/fuzz_open.py fuzz-corpus -runs=1000000 -timeout=10 -rss_limit_mb=2048 -artifact_prefix=fuzz-crash-

Any exception other than SyntaxError, OSError, ValueError or Pillow's DecompressionBombError
is a finding: libFuzzer stops and writes the input to fuzz-crash-<hash>. Turn it into a
regression fixture (a Defect in mlimg/fixture_defects.py) and fix the decoder.
Every mlimg module (container, plugin, all codecs) is instrumented; numpy, torch & co. are not.
"""
from __future__ import annotations

import io
import shutil
import sys
import warnings
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["mlimg", "construct"]):
    import mlimg  # noqa: F401  (registers the plugin)
    from mlimg import codecs

    for _name in codecs.names():
        codecs.get(_name)  # import every codec module now, so it is instrumented

from PIL import Image

ALLOWED = (SyntaxError, OSError, ValueError, Image.DecompressionBombError)


def test_one_input(data: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=["MLIMG"]) as image:
                image.load()
        except ALLOWED:
            pass


def make_corpus(fixtures: Path, corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    for path in sorted(fixtures.rglob("input.mlimg")):
        shutil.copyfile(path, corpus / f"{path.parent.parent.name}-{path.parent.name}.mlimg")
        count += 1
    return count


def warm_up(argv: list[str]) -> None:
    """Decode every seed once before fuzzing, so one-off costs (importing torch, numba
    compilation) are not reported as libFuzzer timeouts."""
    for arg in argv[1:]:
        if not arg.startswith("-") and Path(arg).is_dir():
            for path in sorted(Path(arg).iterdir()):
                test_one_input(path.read_bytes())


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--make-corpus":
        print(f"copied {make_corpus(Path(sys.argv[2]), Path(sys.argv[3]))} seed files to {sys.argv[3]}")
        return
    warm_up(sys.argv)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
