"""Regenerate the Python gRPC modules from the .proto sources.

The .proto files under ``protos/pdeserve/`` are the source of truth. protoc writes modules that
import each other as ``pdeserve.v1...``; they are installed as ``pdeserve.protos.v1...``, so the
import lines and module names are rewritten to the installed path. Ray Serve pickles request messages, so the
modules must import under that package path in every Ray worker.

Usage: ``python -m pdeserve.protos.generate [--check]`` (``make protos``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = ["pdeserve/v1/solver.proto"]


def _rewrite_imports(text: str) -> str:
    # Import lines, and the module name protobuf gives the message classes (pickling finds them by it).
    text = re.sub(r"^from pdeserve\.v1 import", "from pdeserve.protos.v1 import", text, flags=re.M)
    return re.sub(r"(['\"])pdeserve\.v1\.(\w+_pb2)\1", r"\1pdeserve.protos.v1.\2\1", text)


def generate(out_dir: Path) -> list[Path]:
    """Compile every source into ``out_dir/v1/`` and return the written files."""
    from grpc_tools import protoc  # build-time only: grpc_tools is a dev dependency

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{HERE}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}"]
        if protoc.main([*args, *(str(HERE / s) for s in SOURCES)]) != 0:
            raise RuntimeError("protoc failed")
        written = []
        for produced in sorted(Path(tmp, "pdeserve", "v1").glob("*_pb2*")):
            target = out_dir / "v1" / produced.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(_rewrite_imports(produced.read_text()))
            written.append(target)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed modules are stale")
    args = parser.parse_args(argv)
    if not args.check:
        for path in generate(HERE):
            print(f"wrote {path.relative_to(HERE.parent)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        stale = [p.name for p in generate(Path(tmp)) if p.read_text() != (HERE / "v1" / p.name).read_text()]
    if stale:
        print(f"stale generated modules: {', '.join(stale)}; run `make protos`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
