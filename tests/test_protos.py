"""The committed stubs are what the .proto sources generate.

Regenerate with `python -m doorkeeper.tools.protogen`.
"""

from __future__ import annotations

from pathlib import Path

from doorkeeper.tools import protogen


def test_committed_stubs_match_the_proto_sources(tmp_path: Path) -> None:
    protogen.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc produced nothing"
    stale = [
        str(rel) for rel in generated
        if (tmp_path / rel).read_bytes() != (protogen.PROTO_ROOT / rel).read_bytes()
    ]
    assert not stale, f"stubs out of date, run `python -m doorkeeper.tools.protogen`: {stale}"
