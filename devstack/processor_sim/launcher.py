"""Start a simulator process on a free loopback port and stop it again (for tests).

    with SimulatorProcess(log_path, webhook_url=..., webhook_secret=..., extra_args=[...]) as sim:
        sim.url                  # http://127.0.0.1:<port>
        sim.get("/v1/authorizations/auth_...")
        sim.configure(lose_next=1)

The secret travels in the environment, not argv. ``stop()`` sends SIGTERM
(or SIGKILL with ``kill=True``) and waits; ``start()`` again picks a new port
unless ``port`` is given.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

HOST = "127.0.0.1"


class SimulatorProcess:
    def __init__(
        self,
        log_path: Path,
        *,
        webhook_url: str = "",
        webhook_secret: str = "",
        extra_args: Sequence[str] = (),
        port: int = 0,
        start_timeout: float = 15.0,
    ) -> None:
        self.log_path = log_path
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.extra_args = list(extra_args)
        self.port = port
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> SimulatorProcess:
        with tempfile.TemporaryDirectory() as scratch:
            port_file = Path(scratch) / "port"
            argv = [sys.executable, "-m", "devstack.processor_sim", "--host", HOST, "--port", str(self.port)]
            argv += ["--port-file", str(port_file), *self.extra_args]
            env = {**os.environ, "PROCESSOR_SIM_WEBHOOK_URL": self.webhook_url}
            env["PROCESSOR_SIM_WEBHOOK_SECRET"] = self.webhook_secret
            with self.log_path.open("ab") as log:
                self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
            self.port = self._wait_for_port(port_file)
        return self

    def _wait_for_port(self, port_file: Path) -> int:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"processor simulator exited with {self._process.returncode}; see {self.log_path}")
            if port_file.exists():
                return int(port_file.read_text())
            time.sleep(0.05)
        self.stop(kill=True)
        raise RuntimeError(f"processor simulator did not listen within {self.start_timeout}s; see {self.log_path}")

    def stop(self, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # --- the simulator's own API, for assertions ------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as reply:  # noqa: S310 - loopback URL
            return json.load(reply)

    def configure(self, **faults: float) -> Any:
        request = urllib.request.Request(  # noqa: S310 - loopback URL
            self.url + "/_sim/config", data=json.dumps(faults).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as reply:  # noqa: S310
            return json.load(reply)

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
