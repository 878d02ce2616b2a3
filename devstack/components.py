"""What every stack component has in common: paths, start, health, stop.

A component is one long-running process (postgres, redis, kafka, a service,
envoy). Subclasses say how to prepare it once, which command runs it, how to
tell it is ready/healthy, and what to do once it is (create databases,
topics...). ``start`` is idempotent: a running, healthy component is left
alone, unless it tracks its configuration (``config_fingerprint``: Envoy's
rendered file, a service's environment) and that has changed since it was
started, e.g. by a change of replicas: then it is restarted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack.credentials import Secrets
from devstack.ports import HOST, Ports, how_to_free
from devstack.procs import ManagedProcess, RunAs, StackError, tail
from devstack.topology import Topology

REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("devstack")

ReadyCheck = Callable[[], bool]


@dataclass(frozen=True)
class Context:
    """Everything a component needs to know about the stack it belongs to."""

    profile: str
    run_dir: Path
    ports: Ports
    secrets: Secrets
    repo: Path = REPO_ROOT
    topology: Topology = field(default_factory=Topology)

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.run_dir / "pids" / f"{name}.pid"

    def config_path(self, name: str) -> Path:
        """Where the fingerprint of a running component's configuration is kept."""
        return self.run_dir / "pids" / f"{name}.config"


class ComponentFailed(StackError):
    """A component did not become healthy; the message ends with its log tail."""

    def __init__(self, name: str, reason: str, log_path: Path) -> None:
        log_tail = tail(log_path, 25) or "(log is empty)"
        super().__init__(f"{name}: {reason}\n--- last lines of {log_path} ---\n{log_tail}")
        self.component = name


def fingerprint(text: str) -> str:
    """A digest of a configuration; what it hashes may hold secrets, the digest does not show them."""
    return hashlib.sha256(text.encode()).hexdigest()


class Progress:
    """Says every `interval` seconds how long a component has been waited for: "waiting for kafka… 12 s".

    A cold Kafka or a first migration can take a minute or two; without it `make up` looks hung.
    Through the devstack logger: stderr in the CLI, captured with the rest of the log under pytest.
    """

    def __init__(
        self,
        name: str,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.interval = interval
        self._clock = clock
        self._say = say or log.info
        self.started = clock()
        self._next = self.started + interval

    def tick(self) -> None:
        """Called on every poll; speaks once an interval has passed since it last did."""
        now = self._clock()
        if now < self._next:
            return
        self._say(f"waiting for {self.name}… {now - self.started:.0f} s (python -m devstack logs {self.name})")
        self._next = now + self.interval


def busy_ports(component: Component) -> list[str]:
    """One line per port of `component` that another process holds, naming the variable that moves it."""
    ctx = component.ctx
    return [
        f"{component.name}: port {port} on {HOST} is taken by another process "
        f"(`ss -ltnp 'sport = :{port}'` shows which); {how_to_free(ctx.profile, ctx.ports, port)}"
        for port in component.ports()
        if not port_is_free(port)
    ]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def ephemeral_port_range() -> range:
    """The ports the kernel picks from for outgoing connections (Linux; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


@contextlib.contextmanager
def ports_reserved(ports: Iterable[int]) -> Iterator[list[int]]:
    """Keeps the kernel from giving `ports` to outgoing connections while the stack starts; yields the
    ports it holds.

    The local profile's service ports (50051-50054, their metrics and replicas) lie in the ephemeral
    range: a service that started first could connect to Kafka or PostgreSQL from the port the next
    stage's service was about to listen on ("port 50054 is taken"; it happened three starts in a row).
    A port bound explicitly is never picked for an outgoing connection, so each free port of the range
    is bound here, without listening, for the whole start. SO_REUSEADDR (and SO_REUSEPORT, which gRPC
    servers set) let the component itself bind and listen on it meanwhile; a socket that does not
    listen takes no connections.
    """
    held: list[socket.socket] = []
    try:
        for port in ports:
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind((HOST, port))
            except OSError:  # taken: the component's own start says so, or it is already running
                probe.close()
                continue
            held.append(probe)
        yield [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


class Component(ABC):
    """One process of the stack; see the module docstring."""

    name: str
    start_timeout: float = 60.0
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 20.0
    # How often a start that is still waiting says so (Progress).
    progress_interval: float = 5.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.process = ManagedProcess(self.name, ctx.pid_path(self.name), self.log_path)

    @property
    def log_path(self) -> Path:
        return self.ctx.log_path(self.name)

    # --- what subclasses define -------------------------------------------
    @abstractmethod
    def address(self) -> str:
        """Where clients reach it (no secrets)."""

    @abstractmethod
    def command(self) -> list[str]:
        """The argv of the long-running process."""

    @abstractmethod
    def is_healthy(self) -> bool:
        """A real request (query, PING, metadata, gRPC health), never a port probe."""

    def ports(self) -> Sequence[int]:
        """Ports it listens on; checked free before spawning."""
        return ()

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """One-time or per-start setup before spawning (config files, initdb...)."""

    def is_ready(self) -> bool:
        """Ready for `after_ready`; by default the same as healthy."""
        return self.is_healthy()

    def after_ready(self) -> None:  # noqa: B027 - optional hook
        """Idempotent setup that needs the process up (databases, topics...)."""

    def process_env(self) -> dict[str, str]:
        return dict(os.environ)

    def run_as(self) -> RunAs | None:
        return None

    def config_fingerprint(self) -> str | None:
        """A digest of what the process is configured with; None: not tracked (never restarted for it)."""
        return None

    # --- lifecycle ----------------------------------------------------------
    def is_running(self) -> bool:
        return self.process.is_running()

    def start(self) -> bool:
        """Start it unless it already runs as configured now; wait until healthy. True if (re)started."""
        fingerprint = self.config_fingerprint()
        if self.is_running():
            if fingerprint is None or self._recorded_fingerprint() == fingerprint:
                self._wait_until(self.is_ready, "did not become ready", self._progress())
                self.after_ready()
                return False
            log.info("%s: configuration changed since it started: restarting", self.name)
            self.stop()
        busy = busy_ports(self)
        if busy:
            raise StackError("\n".join(busy))
        self.prepare()
        self.process.spawn(self.command(), self.process_env(), self.ctx.repo, self.run_as())
        if fingerprint is not None:
            self.ctx.config_path(self.name).write_text(fingerprint + "\n")
        # One clock for both waits: the developer waits for the component, not for a phase of it.
        progress = self._progress()
        self._wait_until(self.is_ready, "did not become ready", progress)
        self.after_ready()
        self._wait_until(self.is_healthy, "is running but not healthy", progress)
        return True

    def _progress(self) -> Progress:
        return Progress(self.name, self.progress_interval)

    def stop(self) -> None:
        self.process.stop(self.stop_signal, self.stop_timeout)
        self.ctx.config_path(self.name).unlink(missing_ok=True)

    def _recorded_fingerprint(self) -> str | None:
        try:
            return self.ctx.config_path(self.name).read_text().strip()
        except FileNotFoundError:
            return None  # started before fingerprints were kept: its configuration is unknown

    def kill(self, sig: int) -> None:
        self.process.kill(sig)

    def health(self) -> str:
        """'healthy', 'unhealthy' (process up, check fails) or 'down'."""
        if not self.is_running():
            return "down"
        return "healthy" if self.is_healthy() else "unhealthy"

    def _wait_until(self, check: ReadyCheck, failure: str, progress: Progress) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            progress.tick()
            if not self.is_running() or self.process.has_exited():
                raise ComponentFailed(self.name, "process exited while starting", self.log_path)
            if check():
                return
            if time.monotonic() > deadline:
                raise ComponentFailed(self.name, f"{failure} within {self.start_timeout:.0f}s", self.log_path)
            time.sleep(0.25)
