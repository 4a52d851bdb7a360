""".ci/run installs the C++ example's and the C/Fortran clients' toolchain before `make test`, only when
it is missing, as root or through sudo. Its functions run in bash against stand-in commands that record
how they were called."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI_RUN = ROOT / ".ci" / "run"
CPP_PACKAGES = (
    "build-essential cmake pkg-config libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc"
)
PACKAGES = f"{CPP_PACKAGES} gfortran"
INSTALL = f"env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {PACKAGES}"
TOOLS = ("c++", "cc", "gfortran", "cmake", "protoc", "grpc_cpp_plugin")


def stub(bin_dir: Path, name: str, log: Path, exit_code: int = 0, stdout: str = "") -> None:
    """A command that appends its name and arguments to ``log``."""
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\necho "{name} $*" >> {log}\nprintf "{stdout}"\nexit {exit_code}\n')
    path.chmod(0o755)


def run_ci_setup(tmp_path: Path, *, missing=(), uid=0, sudo=False, dev_files=True):
    """Source .ci/run and run its toolchain step on a PATH of stand-ins; (returncode, calls, stderr)."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.log"
    bin_dir.mkdir()
    log.touch()
    for tool in TOOLS:
        if tool not in missing:
            stub(bin_dir, tool, log)
    stub(bin_dir, "pkg-config", log, exit_code=0 if dev_files else 1)
    stub(bin_dir, "id", log, stdout=f"{uid}\\n")
    for name in ("apt-get", "env") + (("sudo",) if sudo else ()):
        stub(bin_dir, name, log)
    script = f"source {CI_RUN}; if cpp_toolchain_missing; then install_cpp_toolchain; fi"
    done = subprocess.run(
        ["/bin/bash", "-c", script], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=30
    )
    calls = [line for line in log.read_text().splitlines() if not line.startswith(("id ", "pkg-config "))]
    return done.returncode, calls, done.stderr


def test_nothing_is_installed_when_the_toolchain_is_there(tmp_path):
    assert run_ci_setup(tmp_path) == (0, [], "")


@pytest.mark.parametrize(
    "case",
    [
        {"missing": ("grpc_cpp_plugin",)},
        {"missing": ("c++", "cmake")},
        {"missing": ("gfortran",)},
        {"dev_files": False},
    ],
    ids=["no grpc_cpp_plugin", "no compiler", "no Fortran compiler", "no grpc++ development files"],
)
def test_root_installs_with_apt_get(tmp_path, case):
    returncode, calls, _ = run_ci_setup(tmp_path, **case)
    assert (returncode, calls) == (0, ["apt-get update", INSTALL])


def test_a_user_installs_through_sudo(tmp_path):
    returncode, calls, _ = run_ci_setup(tmp_path, missing=("protoc",), uid=1000, sudo=True)
    assert (returncode, calls) == (0, ["sudo apt-get update", f"sudo {INSTALL}"])


def test_a_user_without_sudo_gets_the_package_list_and_a_failure(tmp_path):
    returncode, calls, stderr = run_ci_setup(tmp_path, missing=("protoc",), uid=1000)
    assert (returncode, calls) == (1, [])
    assert stderr.strip().endswith(f"install: {PACKAGES}")


@pytest.mark.parametrize(
    ("readme", "packages"),
    [("examples/cpp/README.md", CPP_PACKAGES), ("clients/README.md", PACKAGES)],
    ids=["C++ example", "C and Fortran clients"],
)
def test_ci_installs_what_the_builds_document(readme, packages):
    (documented,) = re.findall(r"^apt-get install (.+)$", (ROOT / readme).read_text(), flags=re.MULTILINE)
    assert documented == packages
