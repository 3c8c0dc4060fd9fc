"""Regenerate the committed Python stubs from `protos/doorkeeper/v1/*.proto`.

The stubs are committed so that installing doorkeeper needs no code generator;
`tests/test_protos.py` regenerates them into a temporary folder and fails when
the committed ones differ. Run after editing a `.proto`:

    python -m doorkeeper.tools.protogen
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[3] / "protos"  # tools/doorkeeper/tools/protogen.py


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "doorkeeper" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Run protoc (from grpcio-tools) for every proto into `out_dir`."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> None:
    generate(PROTO_ROOT)
    print("regenerated stubs in", PROTO_ROOT / "doorkeeper" / "v1", file=sys.stderr)


if __name__ == "__main__":
    main()
