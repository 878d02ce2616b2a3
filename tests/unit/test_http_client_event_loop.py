"""httpx's transport (httpcore) asks which event loop runs several times per request; that must be a lookup.

httpcore calls `current_async_library()` for every lock, event and shielded
close, and it starts with `import sniffio`. Without sniffio installed each of
those is a failed import that searches every entry of sys.path: ~50 µs of CPU
a time, a few times per call to a card processor or a merchant's webhook.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
from collections.abc import Sequence
from types import ModuleType

from httpcore._synchronization import current_async_library


class _Recorder(importlib.abc.MetaPathFinder):
    """Notes every module the import system had to search for; finds nothing itself."""

    def __init__(self) -> None:
        self.searched: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        self.searched.append(fullname)


def test_asking_for_the_event_loop_searches_for_no_module() -> None:
    recorder = _Recorder()

    async def ask() -> list[str]:
        return [current_async_library() for _ in range(20)]

    sys.meta_path.insert(0, recorder)
    try:
        answers = asyncio.run(ask())
    finally:
        sys.meta_path.remove(recorder)
    assert answers == ["asyncio"] * 20
    assert "sniffio" not in recorder.searched
