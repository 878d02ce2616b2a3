"""The merchants' verifier (clients/python-webhooks), loaded from its source folder.

It is a distribution of its own that the project's virtual environment does
not install (merchants `pip install` it); the tests import it from where it
lives, as `paymesh_webhooks`, exactly as a merchant's interpreter would.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SOURCE = Path(__file__).resolve().parents[1] / "clients" / "python-webhooks" / "src" / "paymesh_webhooks"


def load() -> ModuleType:
    if "paymesh_webhooks" in sys.modules:
        return sys.modules["paymesh_webhooks"]
    spec = importlib.util.spec_from_file_location("paymesh_webhooks", SOURCE / "__init__.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["paymesh_webhooks"] = module
    spec.loader.exec_module(module)
    return module


paymesh_webhooks = load()
