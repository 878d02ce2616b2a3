"""python -m devstack up|down|status|logs — the local stack as processes.

python -m devstack up [--profile local|test] [--run-dir DIR] [--only infra|services|NAME...]
                      [--replicas payment=N,wallet=N] [--edge-limits enforce|shadow]
python -m devstack down | status [--only ...] | logs [NAME] [-n LINES] [-f]

--replicas and --edge-limits are kept for the run dir until `down`: a later
`up` without them keeps them, and down/status/logs cover every replica.

The local profile's ports move with PAYMESH_PORT_<NAME> variables, e.g.
PAYMESH_PORT_ENVOY=18080 (README.md, Ports). Exit codes: 0 done (status: all
healthy), 1 a component failed (status: not all healthy), 2 a usage error: an
unknown component, a bad port variable.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from devstack.components import REPO_ROOT
from devstack.envoy_config import RATE_LIMIT_MODES
from devstack.ports import MAX_REPLICAS, REPLICABLE, PortsError, parse_replicas
from devstack.procs import StackError, tail
from devstack.stack import ALL, GROUPS, PROFILES, ComponentStatus, Stack, UnknownComponent, unknown_component
from devstack.topology import Topology, parse_instance

REGISTER_BODY = (
    '{"email":"alice@example.com","password":"correct-horse-battery","display_name":"Alice","account_type":"CUSTOMER"}'
)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--profile",
        choices=PROFILES,
        default="local",
        help="local: documented ports; test: PAYMESH_TEST_PORT_BASE",
    )
    common.add_argument("--run-dir", type=Path, default=None, help="state dir (default .run/local or .run/test-<base>)")
    parser = argparse.ArgumentParser(
        prog="python -m devstack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    only_help = f"groups {sorted(GROUPS)} or components {list(ALL)}"
    up = commands.add_parser("up", parents=[common], help="start (idempotent) and wait healthy")
    up.add_argument("--only", nargs="+", metavar="NAME", help=only_help)
    up.add_argument(
        "--replicas",
        type=_replicas,
        default=None,
        metavar="SERVICE=N,...",
        help=f"replicas of {' and '.join(REPLICABLE)} (1..{MAX_REPLICAS}, unnamed ones 1; default: as the last up)",
    )
    up.add_argument(
        "--edge-limits",
        choices=RATE_LIMIT_MODES,
        default=None,
        help="the edge's per-service rate limits: enforce, or shadow (counted, never refused; make bench);"
        " default: as the last up, else enforce",
    )
    commands.add_parser("down", parents=[common], help="stop everything of this run dir")
    status = commands.add_parser("status", parents=[common], help="health of each component")
    status.add_argument("--only", nargs="+", metavar="NAME", help=only_help)
    logs = commands.add_parser("logs", parents=[common], help="tail logs (all, or one)")
    logs.add_argument("name", nargs="?", help="component, e.g. payment or kafka")
    logs.add_argument("-n", "--lines", type=int, default=40)
    logs.add_argument("-f", "--follow", action="store_true")
    return parser


def _replicas(text: str) -> dict[str, int]:
    try:
        return parse_replicas(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _print_table(rows: list[ComponentStatus], stack: Stack) -> None:
    table = [(row.name, row.address, row.health) for row in rows]
    if any(row.name == "envoy" for row in rows):
        envoy = next(row for row in rows if row.name == "envoy")
        table.append(("envoy-admin", f"127.0.0.1:{stack.ports.envoy_admin}", envoy.health))
    widths = [max(len(str(r[i])) for r in [("NAME", "ADDRESS", "HEALTH"), *table]) for i in range(3)]
    for row in [("NAME", "ADDRESS", "HEALTH"), *table]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _print_first_steps(stack: Stack, started: list[str]) -> None:
    print(f"\nsecrets: {stack.run_dir / 'secrets.env'} (mode 600)")
    print(f"logs:    {stack.run_dir / 'logs'}  (python -m devstack logs NAME)")
    if "jaeger" in started:
        # A jaeger built from its Go module serves the query API but no UI assets (devstack.jaeger): say how
        # to see a trace without them.
        profile = "" if stack.profile == "local" else f" --profile {stack.profile}"
        print(f"traces:  http://127.0.0.1:{stack.ports.jaeger_ui}  (Jaeger UI and query API;"
              f" python -m devstack.traces{profile} --request-id <x-request-id>)")  # fmt: skip
    if "prometheus" in started:
        print(f"metrics: http://127.0.0.1:{stack.ports.prometheus}  (Prometheus; /alerts for the alert rules)")
    if "envoy" in started:
        print(f"\ncurl -s -XPOST 127.0.0.1:{stack.ports.envoy}/v1/auth/register -d '{REGISTER_BODY}'")
    if "auth" in started:
        grpcurl = REPO_ROOT / ".tools" / "bin" / "grpcurl"
        print(f"{grpcurl} -plaintext 127.0.0.1:{stack.ports.auth} list")


def usage_error(message: str) -> int:
    """One line on stderr and exit code 2, as argparse does for a bad option: no traceback for a typo."""
    print(f"python -m devstack: {message}", file=sys.stderr)
    return 2


def cmd_up(stack: Stack, only: list[str] | None) -> int:
    try:
        wanted = stack.resolve(only)
    except UnknownComponent as exc:
        return usage_error(str(exc))
    try:
        stack.check_ports(wanted)
    except StackError as exc:
        print(f"devstack up: nothing started:\n{exc}", file=sys.stderr)
        return 1
    try:
        stack.up(only)
    except StackError as exc:
        print(f"\ndevstack up failed:\n{exc}", file=sys.stderr)
        print(
            "\n(components already started keep running; `python -m devstack down` stops them)",
            file=sys.stderr,
        )
        return 1
    print()
    _print_table(stack.status(only), stack)
    print(f"\ntopology: {stack.topology.describe()}")
    _print_first_steps(stack, wanted)
    return 0


def cmd_status(stack: Stack, only: list[str] | None) -> int:
    try:
        rows = stack.status(only)
    except UnknownComponent as exc:
        return usage_error(str(exc))
    except StackError as exc:
        print(f"devstack status: {exc}", file=sys.stderr)
        return 2
    _print_table(rows, stack)
    if stack.topology != Topology():
        print(f"\ntopology: {stack.topology.describe()}")
    return 0 if all(row.health == "healthy" for row in rows) else 1


def cmd_logs(stack: Stack, name: str | None, lines: int, follow: bool) -> int:
    # A service's name stands for all of its replicas, payment-2 for one. Logs outlive their processes:
    # every replica log in the run dir counts, not only the replicas that run now.
    logs_dir = stack.run_dir / "logs"
    replica_logs = sorted(p.stem for p in logs_dir.glob("*.log") if parse_instance(p.stem)[1] > 1)
    if name is None:
        names = [*ALL, *replica_logs]
    else:
        base = name.removesuffix("_svc")
        if base not in ALL and base not in replica_logs:
            return usage_error(str(unknown_component(name, [*ALL, *replica_logs])))
        names = [base, *(n for n in replica_logs if parse_instance(n)[0] == base)]
    paths = {n: logs_dir / f"{n}.log" for n in names}
    paths = {n: p for n, p in paths.items() if p.exists()}
    if not paths:
        print(f"no logs yet in {stack.run_dir / 'logs'}", file=sys.stderr)
        return 1
    # Where the last lines end and following starts: a line written meanwhile is printed once, by _follow.
    offsets = {component: path.stat().st_size for component, path in paths.items()}
    for component, path in paths.items():
        if len(paths) > 1:
            print(f"==> {component} ({path}) <==")
        print(tail(path, lines, end=offsets[component]))
    if follow:
        sys.stdout.flush()  # the last lines first, also into a pipe (make logs FOLLOW=1 | grep ...)
        _follow(paths, offsets, prefix=len(paths) > 1)
    return 0


def _follow(paths: dict[str, Path], offsets: dict[str, int], prefix: bool) -> None:
    try:
        while True:
            for name, path in paths.items():
                with path.open("rb") as handle:
                    # As tail -f: a log cut short (cleared by hand) is read again from its start.
                    if path.stat().st_size < offsets[name]:
                        offsets[name] = 0
                    handle.seek(offsets[name])
                    chunk = handle.read()
                    offsets[name] = handle.tell()
                for line in chunk.decode("utf-8", errors="replace").splitlines():
                    print(f"{name} | {line}" if prefix else line, flush=True)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[devstack] %(message)s")
    try:
        stack = Stack.for_profile(args.profile, args.run_dir)
    except PortsError as exc:
        return usage_error(str(exc))
    if args.command == "up" and (args.replicas is not None or args.edge_limits is not None):
        recorded = stack.topology
        topology = Topology(
            replicas=args.replicas if args.replicas is not None else recorded.replicas,
            edge_limits=args.edge_limits or recorded.edge_limits,
        )
        stack = Stack.for_profile(args.profile, args.run_dir, topology)
    if args.command == "up":
        return cmd_up(stack, args.only)
    if args.command == "down":
        try:
            stack.down()
        except StackError as exc:
            print(f"devstack down: {exc}", file=sys.stderr)
            return 1
        print(f"stopped; nothing of {stack.run_dir} is running")
        return 0
    if args.command == "status":
        return cmd_status(stack, args.only)
    return cmd_logs(stack, args.name, args.lines, args.follow)


if __name__ == "__main__":
    sys.exit(main())
