"""The image's inputs, checked in seconds (tests/image builds and runs the image itself).

requirements.lock must still say what pyproject.toml asks for, and the Containerfile must keep
the promises deploy/manifests/deployment.yaml relies on: a numeric non-root USER, no build
tools in the final stage, an ENTRYPOINT that is the package's console script.
"""

from __future__ import annotations

import importlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
LOCK_TEXT = (ROOT / "requirements.lock").read_text(encoding="utf-8")
CONTAINERFILE = (ROOT / "Containerfile").read_text(encoding="utf-8")
REGENERATE = "regenerate it: the command is in requirements.lock's header (docs/image.md)"


@dataclass
class Pin:
    version: str
    hashes: int = 0
    via: list[str] = field(default_factory=list)


def parse_lock(text: str) -> dict[str, Pin]:
    """pip-compile's output: `name==version \\`, its `--hash=` lines, then `# via` lines."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for raw in text.splitlines():
        line = raw.strip()
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s\\;]+)", line):
            current = Pin(match.group(2))
            pins[canonicalize_name(match.group(1))] = current
            in_via = False
        elif current is not None and line.startswith("--hash=sha256:"):
            current.hashes += 1
        elif current is not None and line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            current.via.extend([rest] if rest else [])
            in_via = not rest
        elif current is not None and in_via and line.startswith("#   "):
            current.via.append(line.removeprefix("#").strip())
        elif not line.startswith("#"):
            in_via = False
    return pins


LOCK = parse_lock(LOCK_TEXT)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "a-b==1.0 \\\n    --hash=sha256:00\n    # via kube-dlq (pyproject.toml)\n",
            {"a-b": Pin("1.0", 1, ["kube-dlq (pyproject.toml)"])},
        ),
        (
            "Foo_Bar==2 \\\n    --hash=sha256:1 \\\n    --hash=sha256:2\n    # via\n"
            "    #   x\n    #   y\nz==3\n",
            {"foo-bar": Pin("2", 2, ["x", "y"]), "z": Pin("3")},
        ),
        ("# comment only\n", {}),
    ],
)
def test_the_lock_parser_reads_pip_compile_output(text: str, expected: dict[str, Pin]) -> None:
    assert parse_lock(text) == expected


def _direct(source: str) -> set[str]:
    return {name for name, pin in LOCK.items() if any(v.startswith(source) for v in pin.via)}


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    wrong = {}
    for spec in PYPROJECT["project"]["dependencies"]:
        req = Requirement(spec)
        pin = LOCK.get(canonicalize_name(req.name))
        if pin is None or not req.specifier.contains(pin.version, prereleases=True):
            wrong[req.name] = f"{req.specifier} but locked {pin.version if pin else 'nothing'}"
    assert wrong == {}, f"requirements.lock is out of date with pyproject.toml: {REGENERATE}"


def test_the_lock_pins_directly_only_what_pyproject_asks_for() -> None:
    """A dependency dropped from pyproject.toml must leave the lock (and the image) too."""
    asked = {canonicalize_name(Requirement(s).name) for s in PYPROJECT["project"]["dependencies"]}
    build = {canonicalize_name(Requirement(s).name) for s in PYPROJECT["build-system"]["requires"]}
    assert _direct("kube-dlq (pyproject.toml)") - build == asked, REGENERATE
    # The build backend is pinned too: the image installs the package without build isolation.
    assert build <= set(LOCK), REGENERATE


def test_every_pin_has_a_hash() -> None:
    assert LOCK, "requirements.lock pins nothing"
    assert {name for name, pin in LOCK.items() if pin.hashes == 0} == set()


def _stages(text: str) -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped) grouped by FROM."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    )
    stages: list[list[str]] = [[]]
    for line in filter(None, (ln.strip() for ln in joined.splitlines())):
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages[1:]


FINAL = _stages(CONTAINERFILE)[-1]


def _final(keyword: str) -> list[str]:
    return [ln.split(None, 1)[1] for ln in FINAL if ln.split(None, 1)[0].upper() == keyword]


def test_the_final_stage_runs_as_the_numeric_uid_the_deployment_requires() -> None:
    users = _final("USER")
    assert len(users) == 1 and re.fullmatch(r"[1-9]\d*(:\d+)?", users[0]), users
    deployment = next(
        d
        for d in yaml.safe_load_all((ROOT / "deploy/manifests/deployment.yaml").read_text())
        if d["kind"] == "Deployment"
    )
    assert (
        int(users[0].split(":")[0])
        == deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    )


@pytest.mark.parametrize(
    "tool", ["pip install", "apt-get", "gcc", "build-essential", "python3-venv"]
)
def test_the_final_stage_installs_no_build_tool(tool: str) -> None:
    assert [r for r in _final("RUN") if tool in r] == []


def test_the_final_stage_removes_pip_and_copies_only_the_venv_from_the_builder() -> None:
    assert any("pip uninstall" in r for r in _final("RUN"))
    copied = [c for c in _final("COPY") if c.startswith("--from=")]
    assert copied == ["--from=builder /opt/kube-dlq /opt/kube-dlq"]
    builder = _stages(CONTAINERFILE)[0]
    assert any("pip uninstall" in ln and " pip" in ln for ln in builder), "the venv keeps its pip"


def test_the_entrypoint_is_the_console_script_of_the_venv() -> None:
    (entrypoint,) = _final("ENTRYPOINT")
    command = json.loads(entrypoint)
    venv, _, script = command[0].rpartition("/bin/")
    assert script in PYPROJECT["project"]["scripts"], command
    assert any(f"python3 -m venv {venv}" in ln for ln in _stages(CONTAINERFILE)[0])
    module, _, function = PYPROJECT["project"]["scripts"][script].partition(":")
    assert callable(getattr(importlib.import_module(module), function))


def test_the_image_never_writes_bytecode_at_run_time_and_compiles_it_at_build_time() -> None:
    assert any("PYTHONDONTWRITEBYTECODE=1" in e for e in _final("ENV"))
    assert any("compileall" in ln for ln in _stages(CONTAINERFILE)[0])


def test_the_default_base_is_pinned_and_has_the_python_the_lock_was_resolved_for() -> None:
    match = re.search(
        r"^ARG BASE=python:(\d+\.\d+)\.\d+-slim-\w+@sha256:[0-9a-f]{64}$", CONTAINERFILE, re.M
    )
    assert match, "ARG BASE must pin a python slim image by full version and digest"
    locked_for = re.search(r"autogenerated by pip-compile with Python (\d+\.\d+)", LOCK_TEXT)
    assert locked_for and locked_for.group(1) == match.group(1)


def test_the_build_context_lets_in_what_the_containerfile_copies() -> None:
    ignore = (ROOT / ".containerignore").read_text(encoding="utf-8")
    assert (ROOT / ".dockerignore").read_text(encoding="utf-8") == ignore
    allowed = {ln[1:].rstrip("/") for ln in ignore.splitlines() if ln.startswith("!")}
    sources = [
        s
        for c in _stages(CONTAINERFILE)
        for ln in c
        if ln.upper().startswith("COPY ") and "--from" not in ln
        for s in ln.split()[1:-1]
    ]
    assert sources and {s for s in sources if s not in allowed} == set()
    rules = [ln for ln in ignore.splitlines() if ln and not ln.startswith("#")]
    assert rules[0] == "*", "the context lets in only what is listed after `*`"
