"""The load generators: wrk (HTTP, closed loop), ghz (gRPC, closed loop), vegeta (HTTP, open loop).

Each run is bounded by its own duration and, should the tool hang, by a
timeout here; every target is on 127.0.0.1. Each returns the tool's
LoadResult and the CPU seconds the tool itself used (it shares the machine's
cores with the mesh).
"""

from __future__ import annotations

import base64
import json
import resource
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.bench import parsing
from devstack.bench.stats import LoadResult
from devstack.components import REPO_ROOT

TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
PROTOSET = REPO_ROOT / "gen" / "paymesh.pb"
WRK_SCRIPT = Path(__file__).with_name("payments.lua")
CREATE_PAYMENT = "paymesh.payment.v1.PaymentService.CreatePayment"
REQUEST_TIMEOUT_S = 10
# A tool gets this long past its own duration before it is killed.
_GRACE_S = 60


class ToolMissing(RuntimeError):
    pass


def tool(name: str) -> str:
    found = shutil.which(name) or str(TOOLS_BIN / name)
    if not Path(found).exists():
        raise ToolMissing(f"{name} is missing: PAYMESH_BENCH_TOOLS=1 bash devstack/bootstrap.sh (make bench does this)")
    return found


@dataclass(frozen=True)
class Run:
    result: LoadResult
    tool_cpu_s: float


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tool(argv: Sequence[str], timeout_s: float, env: Mapping[str, str] | None = None) -> tuple[str, float]:
    """Runs a tool to completion; returns its stdout and the CPU seconds it used."""
    before = _children_cpu_s()
    done = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout_s, env=dict(env) if env else None, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout, _children_cpu_s() - before


def wrk(
    url: str, requests: Sequence[tuple[str, str]], concurrency: int, seconds: int, key_prefix: str, work: Path
) -> Run:
    """Closed loop: `concurrency` connections, each sending its next payment as soon as the last is answered.

    `requests` are (token, JSON body) pairs, taken in turn.
    """
    lines = work / f"wrk-{key_prefix}.tsv"
    lines.write_text("".join(f"{token}\t{body}\n" for token, body in requests))
    argv = [
        tool("wrk"),
        f"--threads={min(2, concurrency)}",
        f"--connections={concurrency}",
        f"--duration={seconds}s",
        f"--timeout={REQUEST_TIMEOUT_S}s",
        f"--script={WRK_SCRIPT}",
        url,
        "--",
        str(lines),
        key_prefix,
    ]
    out, cpu = run_tool(argv, seconds + _GRACE_S)
    return Run(parsing.wrk(out), cpu)


def ghz(
    target: str,
    messages: Sequence[Mapping[str, Any]],
    metadata: Sequence[Mapping[str, str]],
    concurrency: int,
    connections: int,
    seconds: int,
) -> Run:
    """Closed loop over gRPC: call n sends messages[n % len] with metadata[n % len] and a fresh Idempotency-Key.

    ghz takes one metadata object per run; a template picks the n-th entry
    (ghz renders it per call with the call's RequestNumber, the same number
    that picks the message), so one run spreads over every payer.
    """
    if len(messages) != len(metadata) or not messages:
        raise ValueError("one metadata entry per message")
    template: dict[str, str] = {"idempotency-key": "{{newUUID}}"}
    for key in metadata[0]:
        values = " ".join(f"`{entry[key]}`" for entry in metadata)
        template[key] = f"{{{{index (list {values}) (mod .RequestNumber {len(metadata)})}}}}"
    argv = [
        tool("ghz"),
        "--insecure",
        f"--protoset={PROTOSET}",
        f"--call={CREATE_PAYMENT}",
        f"--data={json.dumps(list(messages))}",
        f"--metadata={json.dumps(template)}",
        f"--concurrency={concurrency}",
        f"--connections={min(connections, concurrency)}",
        f"--duration={seconds}s",
        f"--timeout={REQUEST_TIMEOUT_S}s",
        "--format=json",
        target,
    ]
    out, cpu = run_tool(argv, seconds + _GRACE_S)
    return Run(parsing.ghz(json.loads(out)), cpu)


def vegeta(url: str, requests: Sequence[tuple[str, str]], rate: int, seconds: int, key_prefix: str, work: Path) -> Run:
    """Open loop: `rate` payments per second whatever the answers, each with its own Idempotency-Key.

    vegeta starts a new worker whenever every worker is waiting, so requests go
    out on schedule (up to a bounded number in flight); latencies are then
    corrected against each request's due time (parsing.vegeta).
    """
    # One second more than the attack sends: vegeta cycles through its targets, and a repeated key would be a replay.
    count = rate * (seconds + 1)
    targets = work / f"vegeta-{key_prefix}.jsonl"
    with targets.open("w") as out:
        for n in range(count):
            token, body = requests[n % len(requests)]
            header = {
                "Authorization": [f"Bearer {token}"],
                "Content-Type": ["application/json"],
                "Idempotency-Key": [f"{key_prefix}-{n}"],
            }
            target = {"method": "POST", "url": url, "body": base64.b64encode(body.encode()).decode(), "header": header}
            out.write(json.dumps(target) + "\n")
    results = work / f"vegeta-{key_prefix}.bin"
    attack = [
        tool("vegeta"),
        "attack",
        "-format=json",
        f"-targets={targets}",
        f"-rate={rate}/1s",
        f"-duration={seconds}s",
        f"-timeout={REQUEST_TIMEOUT_S}s",
        # Enough to keep the schedule through a 10 s stall at the rate, and a bound.
        f"-max-workers={min(4096, rate * REQUEST_TIMEOUT_S + 16)}",
        "-laddr=127.0.0.1",
        "-max-body=8192",
        "-http2=false",
        f"-output={results}",
    ]
    _, attack_cpu = run_tool(attack, seconds + REQUEST_TIMEOUT_S + _GRACE_S)
    encoded, encode_cpu = run_tool([tool("vegeta"), "encode", "-to=json", str(results)], _GRACE_S)
    del encode_cpu  # after the run: not load on the mesh
    return Run(parsing.vegeta(encoded.splitlines(), rate), attack_cpu)
