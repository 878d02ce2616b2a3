"""The whole local stack as one object: start, stop, inspect (used by the CLI and pytest).

stack = Stack.for_profile("test")
stack.up(["infra"])            # postgres, redis, kafka
stack.database_url("wallet")   # postgresql+asyncpg://paymesh:...@127.0.0.1:.../paymesh_wallet
stack.down()

scaled = Stack.for_profile("local", topology=Topology(replicas={"payment": 2, "wallet": 2}))
scaled.up()                    # also payment-2 and wallet-2; Envoy and payment_svc restarted to list them
"""

from __future__ import annotations

import difflib
import logging
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devstack import ports as port_plan
from devstack.components import REPO_ROOT, Component, Context, busy_ports, ephemeral_port_range, ports_reserved
from devstack.credentials import Secrets, load_or_create
from devstack.edge import Envoy
from devstack.jaeger import Jaeger
from devstack.kafka_broker import Kafka
from devstack.mailsink import MailSink
from devstack.ports import HOST, SERVICES, Ports
from devstack.postgres import Postgres
from devstack.processor import ProcessorSimulator
from devstack.procs import StackError
from devstack.prometheus_server import Prometheus
from devstack.providers import FakeProviders
from devstack.redis_server import Redis
from devstack.services import REDIS_DB, Service, database_url, redis_url, service_env
from devstack.topology import Topology, parse_instance

log = logging.getLogger("devstack")

PROFILES = ("local", "test")
INFRA = ("postgres", "redis", "kafka")
# The trace backend and the metrics server: the services export to and are scraped by them.
OBSERVABILITY = ("jaeger", "prometheus")
# Components of one stage start together; a stage starts once the previous
# one is healthy (services need infra; payment and notify call auth/wallet,
# payment calls the processor simulator, notify the mail sink). "<service>+"
# stands for a scaled service's replicas after the first: they start once the
# first has migrated the database, and before Envoy lists them.
STAGES: tuple[tuple[str, ...], ...] = (
    (*INFRA, *OBSERVABILITY),
    ("auth", "wallet", "processor", "mailsink", "providers"),
    ("payment", "notify", "wallet+"),
    ("payment+",),
    ("envoy",),
)
# Every component of a stack with one replica of each service.
ALL = tuple(name for stage in STAGES for name in stage if not name.endswith("+"))
GROUPS: dict[str, tuple[str, ...]] = {
    "all": ALL,
    "infra": INFRA,
    "observability": OBSERVABILITY,
    "services": SERVICES,
    "edge": ("envoy",),
}


def default_run_dir(profile: str, ports: Ports) -> Path:
    if profile == "local":
        return REPO_ROOT / ".run" / "local"
    return REPO_ROOT / ".run" / f"test-{port_base(ports)}"


def port_base(ports: Ports) -> int:
    """The PAYMESH_TEST_PORT_BASE a test profile's ports were derived from."""
    return ports.postgres - port_plan.test_ports(0).postgres


def profile_ports(profile: str) -> Ports:
    """The local profile's ports (PAYMESH_PORT_* move them; PortsError names a bad one) or the test profile's."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    return port_plan.local_ports() if profile == "local" else port_plan.test_ports()


class UnknownComponent(StackError):
    """A name that is neither a component nor a group; its message is one line, for the CLI to print as is."""


def unknown_component(name: str, components: Sequence[str], groups: Iterable[str] = ()) -> UnknownComponent:
    """The error for an unknown name: what was asked, the nearest known name if one is close, what exists."""
    known = [*components, *groups]
    close = difflib.get_close_matches(name.removesuffix("_svc"), known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    also = f"; groups: {', '.join(groups)}" if groups else ""
    return UnknownComponent(f"unknown component {name!r}; {hint}components: {', '.join(components)}{also}")


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    pid: int | None
    health: str  # healthy | unhealthy | down


class Stack:
    """One stack (a profile's ports, a run dir, a topology) and its components.

    Without a topology, the one the run dir's last `up` recorded (see
    devstack.topology), else one replica of each service, limits enforced.
    """

    def __init__(self, profile: str, run_dir: Path, ports: Ports, topology: Topology | None = None) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
        self.profile = profile
        self.run_dir = Path(run_dir).resolve()
        self.ports = ports
        self._chosen_topology = topology
        self.topology = topology if topology is not None else Topology.recorded(self.run_dir)
        self._secrets: Secrets | None = None
        self._components: dict[str, Component] = {}
        # Components are started from worker threads; build each one once.
        self._lock = threading.RLock()

    @classmethod
    def for_profile(cls, profile: str, run_dir: Path | None = None, topology: Topology | None = None) -> Stack:
        ports = profile_ports(profile)
        return cls(profile, run_dir or default_run_dir(profile, ports), ports, topology)

    # --- which components --------------------------------------------------------
    @property
    def stages(self) -> list[list[str]]:
        """Component names by start stage, every replica included."""
        stages = []
        for stage in STAGES:
            names: list[str] = []
            for entry in stage:
                names += self.topology.instances(entry[:-1])[1:] if entry.endswith("+") else [entry]
            stages.append(names)
        return stages

    @property
    def names(self) -> list[str]:
        """Every component of this stack's topology, in start order."""
        return [name for stage in self.stages for name in stage]

    def surplus(self) -> list[str]:
        """Replicas this run dir has pid files for that its topology does not have (scaled down meanwhile)."""
        found = sorted(path.stem for path in (self.run_dir / "pids").glob("*.pid"))
        return [name for name in found if parse_instance(name)[1] > 1 and name not in self.names]

    def resolve(self, names: Iterable[str] | None) -> list[str]:
        """Component names from names, groups ('infra'...) or '<x>_svc' aliases, in start order.

        A service's name stands for all of its replicas (and surplus ones);
        'payment-2' for that replica only.
        """
        known = [*self.names, *self.surplus()]
        wanted: set[str] = set()
        for raw in names if names is not None else ["all"]:
            name = raw.removesuffix("_svc")
            if name in GROUPS or name in ALL:
                bases = set(GROUPS.get(name, (name,)))
                wanted.update(n for n in known if parse_instance(n)[0] in bases)
            elif name in known:
                wanted.add(name)
            else:
                raise unknown_component(raw, known, sorted(GROUPS))
        return [name for name in known if name in wanted]

    # --- configuration for clients (tests, services) ---------------------------
    @property
    def secrets(self) -> Secrets:
        with self._lock:
            if self._secrets is None:
                self._secrets = load_or_create(self.run_dir)
            return self._secrets

    def env(self, service: str) -> dict[str, str]:
        """The variables `service` (its first replica) runs with (merge over os.environ to use them)."""
        name = service.removesuffix("_svc")
        return service_env(name, self.ports, self.secrets, self.run_dir, self.profile, replicas=self.topology.replicas)

    def database_url(self, service: str, driver: str = "asyncpg") -> str:
        """SQLAlchemy URL of a service's database; driver='' for a plain asyncpg DSN."""
        return database_url(service.removesuffix("_svc"), self.ports, self.secrets, driver)

    def redis_url(self, db: int | str = 0) -> str:
        """Redis URL for a db index, or for a service name (its own db)."""
        index = REDIS_DB[db.removesuffix("_svc")] if isinstance(db, str) else db
        return redis_url(index, self.ports, self.secrets)

    @property
    def kafka_bootstrap(self) -> str:
        return f"{HOST}:{self.ports.kafka}"

    def component(self, name: str) -> Component:
        name = name.removesuffix("_svc")
        with self._lock:
            if name not in self._components:
                self._components[name] = self._build(name)
            return self._components[name]

    def _build(self, name: str) -> Component:
        ctx = Context(self.profile, self.run_dir, self.ports, self.secrets, topology=self.topology)
        builders: dict[str, Callable[[], Component]] = {
            "postgres": lambda: Postgres(ctx),
            "redis": lambda: Redis(ctx),
            "kafka": lambda: Kafka(ctx),
            "envoy": lambda: Envoy(ctx),
            "processor": lambda: ProcessorSimulator(ctx),
            "mailsink": lambda: MailSink(ctx),
            "providers": lambda: FakeProviders(ctx),
            "jaeger": lambda: Jaeger(ctx),
            "prometheus": lambda: Prometheus(ctx),
        }
        service, replica = parse_instance(name)
        if service in SERVICES:
            return Service(ctx, service, replica)
        if name not in builders:
            raise unknown_component(name, self.names)
        return builders[name]()

    # --- lifecycle ----------------------------------------------------------------
    def up(self, components: Iterable[str] | None = None) -> None:
        """Start the named components/groups (default: all), stage by stage, as the topology says.

        Running components whose configuration changed (Envoy's endpoints,
        payment_svc's wallet replicas) restart; replicas beyond the topology
        stop once Envoy no longer lists them.
        """
        wanted = self.resolve(components)
        self.check_ports(wanted)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.topology.record(self.run_dir)
        with ports_reserved(self._ephemeral_ports(wanted)):
            for stage in self.stages:
                self._in_parallel([name for name in stage if name in wanted], self.start_component)
        self._in_parallel([name for name in wanted if name not in self.names], self.stop_component)

    def check_ports(self, names: Iterable[str]) -> None:
        """Fail before anything starts if a port of a component that is to start is taken.

        Envoy starts last: without this, a taken 8080 would surface after Kafka's minute of start-up.
        Each component checks again as it starts (another process may take a port meanwhile).
        """
        stopped = [self.component(name) for name in names if not self.component(name).is_running()]
        busy = [line for component in stopped for line in busy_ports(component)]
        if busy:
            raise StackError("\n".join(busy))

    def _ephemeral_ports(self, names: Iterable[str]) -> list[int]:
        """The ports of the components to start that the kernel could give to an outgoing connection."""
        ephemeral = ephemeral_port_range()
        starting = [self.component(name) for name in names if not self.component(name).is_running()]
        return [port for component in starting for port in component.ports() if port in ephemeral]

    def down(self) -> None:
        """Stop every component that runs from this run dir, last stage first; forget the topology."""
        self._in_parallel(self.surplus(), self.stop_component)
        for stage in reversed(self.stages):
            self._in_parallel(stage, self.stop_component)
        Topology.forget(self.run_dir)
        self._reset_topology()

    def _reset_topology(self) -> None:
        # What a new Stack object for this run dir would now take: the chosen topology, else the default.
        with self._lock:
            self.topology = self._chosen_topology or Topology()
            self._components.clear()

    def start_component(self, name: str) -> None:
        component = self.component(name)
        started = component.start()
        log.info("%s: %s (%s)", component.name, "started" if started else "already running", component.address())

    def stop_component(self, name: str) -> None:
        component = self.component(name)
        running = component.is_running()
        component.stop()  # also clears the pid file and configuration record of one that died
        if running:
            log.info("%s: stopped", component.name)

    def wipe(self) -> None:
        """Delete the run dir (databases, Kafka logs, secrets) of a stopped stack."""
        running = self.pids()
        if running:
            raise StackError(f"cannot wipe {self.run_dir}: still running: {sorted(running)}")
        with self._lock:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self._secrets = None
            self._reset_topology()

    def kill_component(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the component's whole process group (e.g. to simulate a crash)."""
        self.component(name).kill(sig)

    def status(self, components: Iterable[str] | None = None) -> list[ComponentStatus]:
        names = self.resolve(components)
        return [self._status(self.component(name)) for name in names]

    def pids(self) -> dict[str, int]:
        """Pids of the components that run now (replicas included)."""
        found = {name: self.component(name).process.pid() for name in [*self.names, *self.surplus()]}
        return {name: pid for name, pid in found.items() if pid is not None}

    @staticmethod
    def _status(component: Component) -> ComponentStatus:
        return ComponentStatus(component.name, component.address(), component.process.pid(), component.health())

    @staticmethod
    def _in_parallel(names: Sequence[str], action: Callable[[str], None]) -> None:
        if not names:
            return
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            futures = [pool.submit(action, name) for name in names]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            if len(errors) == 1:
                raise errors[0]  # type: ignore[misc]
            raise StackError("\n\n".join(str(error) for error in errors))
