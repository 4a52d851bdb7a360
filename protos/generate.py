"""Regenerate the Python gRPC modules from the .proto sources.

The .proto files are the source of truth, in one tree under ``protos/src/`` whose folders mirror their
proto packages: ``pdeserve/v1/solver.proto`` (pdeserve's own API) and ``inference/grpc_service.proto``
(the Open Inference Protocol v2); they ship as package data for clients in other languages. The
generated modules live in the subpackages ``protos/v1/`` and ``protos/inference/`` and nowhere else.
protoc writes modules that import each other by the proto folder (``pdeserve.v1...``, ``inference...``);
they are installed as ``pdeserve.protos.v1...`` and ``pdeserve.protos.inference...``, so the import lines
and module names are rewritten to the installed path. Ray Serve pickles request messages, so the modules
must import under that package path in every Ray worker.

Usage: ``python -m pdeserve.protos.generate [--check]`` (``make protos``).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE / "src"
# Proto source (relative to PROTO_ROOT) -> the subpackage of pdeserve.protos its generated modules live in.
SOURCES = {"pdeserve/v1/solver.proto": "v1", "inference/grpc_service.proto": "inference"}


def _rewrite_imports(text: str) -> str:
    # Import lines, and the module name protobuf gives the message classes (pickling finds them by it).
    for source, package in SOURCES.items():
        module = str(Path(source).parent).replace("/", ".")
        installed = f"pdeserve.protos.{package}"
        text = re.sub(rf"^from {re.escape(module)} import", f"from {installed} import", text, flags=re.M)
        text = re.sub(rf"(['\"]){re.escape(module)}\.(\w+_pb2)\1", rf"\1{installed}.\2\1", text)
    return text


def generate(out_dir: Path) -> list[Path]:
    """Compile every source into ``out_dir/<subpackage>/`` and return the written files."""
    from grpc_tools import protoc  # build-time only: grpc_tools is a dev dependency

    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
        ]
        if protoc.main([*args, *(str(PROTO_ROOT / s) for s in SOURCES)]) != 0:
            raise RuntimeError("protoc failed")
        written = []
        for source, package in SOURCES.items():
            stem = Path(source).stem
            for produced in sorted(Path(tmp, source).parent.glob(f"{stem}_pb2*")):
                target = out_dir / package / produced.name
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
        stale = [
            str(p.relative_to(tmp))
            for p in generate(Path(tmp))
            if not (HERE / p.relative_to(tmp)).is_file()
            or p.read_text() != (HERE / p.relative_to(tmp)).read_text()
        ]
    if stale:
        print(f"stale generated modules: {', '.join(stale)}; run `make protos`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
