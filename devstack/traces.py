"""Print traces from the stack's Jaeger as trees, in the terminal.

    python -m devstack.traces --request-id 7342f7d8-57cb-9254-b731-20e4a923c5af
    python -m devstack.traces 108246a5485569b179521fadfb0033be
    python -m devstack.traces --service payment_svc --limit 5
    python -m devstack.traces --profile test --request-id ...   # the test stack (PAYMESH_TEST_PORT_BASE)

A request's id is in Envoy's `x-request-id` answer header and on every log
line of it; its trace id too (`trace_id`). Jaeger built from the Go module has
no web UI (devstack.jaeger), hence this; its query API is on the UI port.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from devstack.envoy_config import EDGE_SERVICE_NAME
from devstack.stack import PROFILES, profile_ports


def _get(base: str, path: str) -> Any:
    with urllib.request.urlopen(base + path, timeout=10) as reply:  # noqa: S310 (the stack's Jaeger, loopback)
        return json.load(reply)["data"]


def _lines(trace: dict[str, Any]) -> list[str]:
    """The trace as an indented tree: service, operation, duration; links as → lines."""
    services = {key: p["serviceName"] for key, p in trace["processes"].items()}
    spans = {s["spanID"]: s for s in trace["spans"]}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in trace["spans"]:
        parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
        parent = parents[0] if parents and parents[0] in spans else None
        children.setdefault(parent, []).append(span)
    out = [f"trace {trace['traceID']}: {len(spans)} spans"]

    def walk(span: dict[str, Any], depth: int) -> None:
        tags = {t["key"]: t["value"] for t in span["tags"]}
        error = "  ERROR" if tags.get("error") or tags.get("otel.status_code") == "ERROR" else ""
        out.append(f"{'  ' * depth}{services[span['processID']]}: {span['operationName']} "
                   f"{span['duration'] / 1000:.1f} ms{error}")  # fmt: skip
        for ref in span["references"]:
            if ref["refType"] == "FOLLOWS_FROM":
                out.append(f"{'  ' * (depth + 1)}→ linked: trace {ref['traceID']} span {ref['spanID']}")
        for child in sorted(children.get(span["spanID"], []), key=lambda s: s["startTime"]):
            walk(child, depth + 1)

    for root in sorted(children.get(None, []), key=lambda s: s["startTime"]):
        walk(root, 0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.traces", description=__doc__.split("\n")[0])
    parser.add_argument("trace_id", nargs="?", help="a trace id (32 hex digits)")
    parser.add_argument("--request-id", help="the edge's x-request-id of a request")
    parser.add_argument("--service", help="the latest traces of a service (e.g. payment_svc, envoy)")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--profile", choices=PROFILES, default="local")
    args = parser.parse_args(argv)
    base = f"http://127.0.0.1:{profile_ports(args.profile).jaeger_ui}"
    try:
        if args.trace_id:
            traces = _get(base, f"/api/traces/{args.trace_id}")
        else:
            query: dict[str, str | int] = {"lookback": "1h", "limit": args.limit}
            if args.request_id:
                query |= {"service": EDGE_SERVICE_NAME, "tags": json.dumps({"guid:x-request-id": args.request_id})}
            elif args.service:
                query["service"] = args.service
            else:
                parser.error("give a trace id, --request-id or --service")
            traces = _get(base, f"/api/traces?{urllib.parse.urlencode(query)}")
    except urllib.error.HTTPError as error:
        print(f"Jaeger answered {error.code}: no such trace (yet)?", file=sys.stderr)
        return 1
    except urllib.error.URLError as error:
        print(f"Jaeger is not answering at {base} ({error.reason}): is the stack up?", file=sys.stderr)
        return 1
    if not traces:
        print("no trace found", file=sys.stderr)
        return 1
    for trace in traces:
        print("\n".join(_lines(trace)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
