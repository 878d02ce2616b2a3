"""README.md shows what works: the client SDK's install line and its lines of use, taken from the example program.

tests/e2e/test_client_sdk.py type-checks clients/python/examples/quickstart.py under mypy --strict and runs it
against the stack; the README's snippet is held to the same lines, so it cannot drift from what is tested.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
QUICKSTART = ROOT / "clients" / "python" / "examples" / "quickstart.py"


def _sdk_snippet() -> list[str]:
    section = README.split("## The Python client SDK", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return [line.strip() for line in code.splitlines() if line.strip()]


def test_the_readme_installs_the_sdk_from_its_folder() -> None:
    section = README.split("## The Python client SDK", 1)[1].split("\n## ", 1)[0]
    assert "pip install ./clients/python\n" in section


def test_the_readmes_sdk_lines_are_the_example_programs() -> None:
    lines = _sdk_snippet()
    assert 10 <= len(lines) <= 20, lines
    example = {line.strip() for line in QUICKSTART.read_text().splitlines()}
    # The import and the edge's address are the snippet's own; every other line is one the example runs.
    (imports, edge, *used) = lines
    assert imports.startswith("from paymesh_client import ")
    assert edge.startswith('edge = "127.0.0.1:8080"')
    imported = set(imports.removeprefix("from paymesh_client import ").split(", "))
    example_imports = next(line for line in example if line.startswith("from paymesh_client import "))
    assert imported <= set(example_imports.removeprefix("from paymesh_client import ").split(", "))
    assert [line for line in used if line not in example] == []
