"""Stock Debian 12: the bootstrap installs into the project's .venv, never into Debian's python3 (PEP 668).

README.md promises `make up` and `make test` on a fresh Debian 12, whose /usr/bin/python3 is externally
managed: it refuses `pip install`. A scratch copy of the repository's tracked files runs the Python part of
`make deps` (`bash devstack/bootstrap.sh python`: a venv and the whole dev lock from PyPI, a minute or
two) with nothing but /usr/bin:/bin on the PATH, under `bash -x`; then Make targets run with the same PATH.
The rest of the bootstrap (Debian packages, npm, Go, Maven) has no Python in it and is left out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_PYTHON = Path("/usr/bin/python3")
MARKER = Path(f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}/EXTERNALLY-MANAGED")
STOCK_PATH = "/usr/bin:/bin"
# Where a pip install into Debian's interpreter would land: its own, the admin's, and the user's site.
SYSTEM_SITES = [
    Path("/usr/lib/python3/dist-packages"),
    Path(f"/usr/local/lib/python{sys.version_info.major}.{sys.version_info.minor}/dist-packages"),
    Path.home() / ".local" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages",
]

pytestmark = pytest.mark.skipif(
    not MARKER.exists() or not DEBIAN_PYTHON.exists(),
    reason=f"needs an externally managed {DEBIAN_PYTHON} of Python {sys.version_info.major}.{sys.version_info.minor}"
    " (Debian 12's)",
)


def _stock_env() -> dict[str, str]:
    """A new user's shell: Debian's PATH, no virtualenv active; the machine's pip and proxy settings kept."""
    kept = {"HOME", "LANG", "LC_ALL", "SSL_CERT_FILE", "SSL_CERT_DIR", "TMPDIR"}
    env = {k: v for k, v in os.environ.items() if k in kept or k.startswith("PIP_") or k.lower().endswith("_proxy")}
    return {**env, "PATH": STOCK_PATH, "PS4": "+ "}


def _site_listing() -> dict[str, list[str]]:
    return {str(site): sorted(p.name for p in site.iterdir()) if site.is_dir() else [] for site in SYSTEM_SITES}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The repository's tracked files, as a fresh clone has them (with this checkout's changes)."""
    copy = tmp_path_factory.mktemp("stock-debian") / "paymesh"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    yield copy
    shutil.rmtree(copy, ignore_errors=True)  # the venv is ~700 MB: not for pytest's kept tmp dirs


@pytest.fixture(scope="module")
def bootstrapped(scratch: Path) -> tuple[Path, subprocess.CompletedProcess[str], dict[str, list[str]]]:
    """The first `bootstrap.sh python` in the scratch copy, and the system sites as they were before it."""
    before = _site_listing()
    result = subprocess.run(
        ["/bin/bash", "-x", "devstack/bootstrap.sh", "python"],
        cwd=scratch,
        env=_stock_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return scratch, result, before


def _traced_commands(stderr: str) -> list[str]:
    """The commands bash -x ran (one line each, '+' prefixes of subshells stripped)."""
    return [re.sub(r"^\++ ", "", line) for line in stderr.splitlines() if line.startswith("+")]


def test_the_stock_path_finds_debians_externally_managed_python_first() -> None:
    found = subprocess.run(
        ["/bin/sh", "-c", "command -v python3"], env=_stock_env(), capture_output=True, text=True, check=True
    )
    assert found.stdout.strip() == str(DEBIAN_PYTHON)
    refused = subprocess.run(
        [str(DEBIAN_PYTHON), "-m", "pip", "install", "--dry-run", "--no-index", "paymesh"],
        env=_stock_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    # What README's promise is about: pip refuses Debian's interpreter (or Debian has no pip for it at all).
    assert refused.returncode != 0
    assert "externally-managed-environment" in refused.stderr or "No module named pip" in refused.stderr


def test_the_bootstrap_succeeds_with_only_debians_python(
    bootstrapped: tuple[Path, subprocess.CompletedProcess[str], dict[str, list[str]]],
) -> None:
    _, result, _ = bootstrapped
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "[bootstrap] ready: .venv (Python 3.11" in result.stdout


def test_every_pip_the_bootstrap_runs_is_the_venvs_and_debians_python_only_makes_the_venv(
    bootstrapped: tuple[Path, subprocess.CompletedProcess[str], dict[str, list[str]]],
) -> None:
    scratch, result, _ = bootstrapped
    commands = _traced_commands(result.stderr)
    venv_python = f"{scratch}/.venv/bin/python"
    # Not the log lines that announce them: what ran.
    ran = [c for c in commands if not c.startswith(("log ", "printf "))]
    pips = [c for c in ran if re.search(r"(^|[\s/])pip3?(\s|$)", c)]
    assert len(pips) == 2, pips  # the lock, then paymesh and its SDK (editable, --no-deps)
    assert all(c.startswith(f"{venv_python} -m pip install ") for c in pips), pips
    assert "--require-hashes -r requirements/dev.txt" in pips[0]
    assert f"python3 -m venv {scratch}/.venv" in ran
    assert not [c for c in ran if c.startswith(("apt-get", "sudo"))]


def test_nothing_lands_in_the_system_interpreters_site_packages(
    bootstrapped: tuple[Path, subprocess.CompletedProcess[str], dict[str, list[str]]],
) -> None:
    _, result, before = bootstrapped
    assert result.returncode == 0
    assert _site_listing() == before


def test_the_venv_is_debians_python_with_the_scratch_checkout_installed(
    bootstrapped: tuple[Path, subprocess.CompletedProcess[str], dict[str, list[str]]],
) -> None:
    scratch, result, _ = bootstrapped
    assert result.returncode == 0
    probe = "import sys, paymesh_runtime, paymesh_client; print(sys.prefix, sys.base_prefix, paymesh_runtime.__file__)"
    # -I and a neutral cwd: the import must come from what the venv installed, not from the directory it runs in.
    out = subprocess.run(
        [f"{scratch}/.venv/bin/python", "-I", "-c", probe],
        cwd="/",
        env=_stock_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    prefix, base_prefix, module = out.stdout.split()
    assert (prefix, base_prefix) == (f"{scratch}/.venv", "/usr")
    assert module == f"{scratch}/paymesh_runtime/__init__.py"


def test_make_targets_run_the_venvs_python_and_tools(
    bootstrapped: tuple[Path, subprocess.CompletedProcess[str], dict[str, list[str]]],
) -> None:
    scratch, result, _ = bootstrapped
    assert result.returncode == 0
    # What a recipe's shell finds, with the Makefile's own PATH: an extra target, evaluated in.
    where = subprocess.run(
        ["make", "-s", "--eval", "where: ; @command -v python python3 pytest ruff mypy lint-imports", "where"],
        cwd=scratch,
        env=_stock_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    found = where.stdout.split()
    assert len(found) == 6, where
    assert all(path.startswith(f"{scratch}/.venv/bin/") for path in found), found
    # A real target: Debian's python3 has none of devstack's imports, the venv's answers as a tool does.
    logs = subprocess.run(
        ["make", "-s", "logs", "NAME=nosuch"], cwd=scratch, env=_stock_env(), capture_output=True, text=True
    )
    assert "python -m devstack: unknown component 'nosuch'" in logs.stderr, logs.stderr
    assert "Traceback" not in logs.stderr


def test_a_second_bootstrap_installs_nothing(
    bootstrapped: tuple[Path, subprocess.CompletedProcess[str], dict[str, list[str]]],
) -> None:
    scratch, first, _ = bootstrapped
    assert first.returncode == 0
    again = subprocess.run(
        ["/bin/bash", "-x", "devstack/bootstrap.sh", "python"],
        cwd=scratch,
        env=_stock_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert not [c for c in _traced_commands(again.stderr) if " -m pip " in c or " -m venv " in c]
