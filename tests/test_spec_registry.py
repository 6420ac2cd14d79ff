"""The written specification and the code must agree: chunk registry and the worked example."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mlimg import codecs, container

SPEC = Path(__file__).resolve().parent.parent / "spec"
HEADER_ROW = re.compile(r"^\|\s*chunk\s*\|\s*owner\s*\|\s*critical\s*\|\s*payload\s*\|\s*$")


def registry_rows() -> list[tuple[str, str, str, Path]]:
    """(chunk, owner, critical, file) for every row of every registry table under spec/."""
    rows = []
    for path in sorted(SPEC.rglob("*.md")):
        in_table = False
        for line in path.read_text(encoding="utf-8").splitlines():
            if HEADER_ROW.match(line):
                in_table = True
                continue
            if not in_table:
                continue
            if not line.startswith("|"):
                in_table = False
                continue
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if set(cells[0]) <= set("-: "):
                continue  # the |---| separator row
            name = re.fullmatch(r"`([A-Za-z]{4})`", cells[0])
            assert name, f"{path.name}: registry row {line!r} must name one chunk in backticks"
            rows.append((name.group(1), cells[1], cells[2], path))
    return rows


def code_chunk_types() -> set[str]:
    types = set(container.CONTAINER_CHUNKS)
    for codec in codecs.all_codecs():
        types |= {spec.type for spec in codec.chunk_specs}
    return types


def test_registry_tables_equal_the_chunk_types_the_code_knows():
    documented = {row[0] for row in registry_rows()}
    known = code_chunk_types()
    assert documented - known == set(), "documented in spec/ but unknown to the code"
    assert known - documented == set(), "known to the code but missing from spec/ registry tables"


def test_each_chunk_is_registered_once_with_the_right_criticality():
    seen = {}
    for chunk_type, _owner, critical, path in registry_rows():
        assert chunk_type not in seen, f"{chunk_type} registered in both {seen[chunk_type].name} and {path.name}"
        seen[chunk_type] = path
        expected = "yes" if chunk_type[0].isupper() else "no"
        assert critical.lower() == expected, f"{path.name}: {chunk_type} critical column says {critical!r}"


def test_container_chunks_are_in_the_main_document():
    main = {row[0] for row in registry_rows() if row[3].name == "MLIMG.md"}
    assert main == set(container.CONTAINER_CHUNKS)


@pytest.mark.parametrize("name", codecs.names())
def test_every_method_has_a_document(name):
    assert (SPEC / "methods" / f"{name}.md").is_file(), f"spec/methods/{name}.md is missing"


def test_worked_example_matches_the_code():
    text = (SPEC / "MLIMG.md").read_text(encoding="utf-8")
    block = text.split("## 13. Example", 1)[1].split("```", 2)[1]
    hex_bytes = []
    for line in block.splitlines():
        fields = re.split(r"\s{3,}", line.strip())[0]  # drop the trailing comment
        hex_bytes += re.findall(r"\b[0-9a-f]{2}\b", fields)
    example = bytes(int(b, 16) for b in hex_bytes)
    assert example == container.build(container.FileHeader(2, 1, "L", "raw", 1), [("RAWD", b"\x00\xff")])
    assert container.parse(example).header.width == 2


def test_spec_limits_match_the_code():
    text = (SPEC / "MLIMG.md").read_text(encoding="utf-8")
    assert "16 777 216 (2^24)" in text and container.MAX_DIMENSION == 1 << 24
    assert "2 147 483 647 (2^31 − 1)" in text and container.MAX_CHUNK_LENGTH == 2**31 - 1
    assert "≤ 4096" in text and container.MAX_MHDR_LENGTH == 4096
    assert "8b 4d 4c 49 0d 0a 1a 0a" in text and container.SIGNATURE == bytes.fromhex("8b4d4c490d0a1a0a")
