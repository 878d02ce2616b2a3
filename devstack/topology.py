"""What a stack runs beyond its profile: replicas of the money-path services, and how its edge applies rate limits.

``python -m devstack up --replicas payment=2,wallet=2 --edge-limits shadow``
records the choice in the run dir (``topology.json``), so that ``down``,
``status``, ``logs`` and a later ``up`` without those options act on the same
stack; ``down`` forgets it (the next ``up`` starts one replica of each,
limits enforced).

Replica 1 of a service keeps the plain name (``payment``: ``payment.log``,
``pids/payment.pid``); replica k is ``payment-k`` with its own log, pid file
and ports (devstack.ports).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack.envoy_config import RATE_LIMIT_MODES
from devstack.ports import MAX_REPLICAS, REPLICABLE

FILE_NAME = "topology.json"


def instance_name(service: str, replica: int) -> str:
    return service if replica == 1 else f"{service}-{replica}"


def parse_instance(name: str) -> tuple[str, int]:
    """("payment", 2) for "payment-2"; (name, 1) for a name without a replica suffix."""
    service, dash, number = name.rpartition("-")
    if dash and service in REPLICABLE and number.isdigit() and 2 <= int(number) <= MAX_REPLICAS:
        return service, int(number)
    return name, 1


@dataclass(frozen=True)
class Topology:
    """Replicas per service (1 unless named here) and the edge's rate-limit mode (envoy_config.RATE_LIMIT_MODES)."""

    replicas: Mapping[str, int] = field(default_factory=dict)
    edge_limits: str = "enforce"

    def __post_init__(self) -> None:
        for service, count in self.replicas.items():
            if service not in REPLICABLE or not 1 <= count <= MAX_REPLICAS:
                raise ValueError(f"{service}={count}: replicas 1..{MAX_REPLICAS} of {REPLICABLE} only")
        if self.edge_limits not in RATE_LIMIT_MODES:
            raise ValueError(f"edge limits {self.edge_limits!r}; expected one of {RATE_LIMIT_MODES}")
        # One replica is the default: leaving it out keeps equal topologies equal.
        object.__setattr__(self, "replicas", {s: n for s, n in sorted(self.replicas.items()) if n != 1})

    def count(self, service: str) -> int:
        return self.replicas.get(service, 1)

    def instances(self, service: str) -> list[str]:
        """Component names of the service's replicas, the first one first."""
        return [instance_name(service, k) for k in range(1, self.count(service) + 1)]

    def describe(self) -> str:
        scaled = ", ".join(f"{s} ×{n}" for s, n in self.replicas.items()) or "one replica of each service"
        return f"{scaled}; edge rate limits: {self.edge_limits}"

    # --- the record in the run dir -------------------------------------------------
    @classmethod
    def recorded(cls, run_dir: Path) -> Topology:
        """What the last `up` of this run dir set, or the default."""
        try:
            data = json.loads((run_dir / FILE_NAME).read_text())
        except FileNotFoundError:
            return cls()
        return cls(replicas=dict(data.get("replicas", {})), edge_limits=str(data.get("edge_limits", "enforce")))

    def record(self, run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        data = {"replicas": dict(self.replicas), "edge_limits": self.edge_limits}
        (run_dir / FILE_NAME).write_text(json.dumps(data, indent=2) + "\n")

    @staticmethod
    def forget(run_dir: Path) -> None:
        (run_dir / FILE_NAME).unlink(missing_ok=True)
