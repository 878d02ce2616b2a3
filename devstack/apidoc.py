"""Writes docs/api.md from the contracts, so the reference never drifts.

`python -m devstack.apidoc > docs/api.md` (run by `make gen`); a unit test
checks the committed file is fresh. Comments come from the descriptor set's
source info, i.e. straight from protos/.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parents[1]

HTTP_CODES = {
    "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "ABORTED": 409, "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499, "INTERNAL": 500, "UNKNOWN": 500, "DATA_LOSS": 500,
    "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504,
}  # fmt: skip


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): " ".join(loc.leading_comments.split())
        for loc in file.source_code_info.location
        if loc.leading_comments
    }


def _route(method: descriptor_pb2.MethodDescriptorProto) -> str:
    if not method.options.HasExtension(annotations_pb2.http):
        return "internal (no route)"
    rule = method.options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern") or ""
    return f"`{verb.upper()} {getattr(rule, verb)}`"


def _services(files: list[descriptor_pb2.FileDescriptorProto]) -> Iterator[str]:
    for file in files:
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            yield f"\n## {file.package}.{service.name}\n"
            yield comments.get((6, s_index), "") + "\n"
            yield "\n| method | route | what it does |\n|---|---|---|"
            for m_index, method in enumerate(service.method):
                doc = comments.get((6, s_index, 2, m_index), "")
                yield f"| {method.name} | {_route(method)} | {doc} |"


def _errors(files: list[descriptor_pb2.FileDescriptorProto]) -> Iterator[str]:
    file = next(f for f in files if f.name == "paymesh/common/v1/errors.proto")
    comments = _comments(file)
    yield "\n## Error reasons\n"
    yield comments.get((5, 0), "") + "\n"
    yield "| reason | gRPC code | HTTP | meaning |\n|---|---|---|---|"
    for v_index, value in enumerate(file.enum_type[0].value):
        if value.number == 0:
            continue
        doc = comments.get((5, 0, 2, v_index), "")
        code, _, meaning = doc.partition(":")
        grpc_code = code.split(" ")[0]
        yield f"| {value.name} | {grpc_code} | {HTTP_CODES.get(grpc_code, '')} | {meaning.strip()} |"


def render() -> str:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString((ROOT / "gen/paymesh.pb").read_bytes())
    files = [f for f in descriptors.file if f.package.startswith("paymesh.") and f.service]
    all_files = [f for f in descriptors.file if f.package.startswith("paymesh.")]
    lines = [
        "# API and error reference",
        "",
        "Generated from protos/ by `python -m devstack.apidoc` (`make gen`); do not edit.",
        "HTTP/JSON goes through Envoy on 127.0.0.1:8080 with `Authorization: Bearer <access token>`;",
        "the same methods are gRPC services. int64 fields (amounts) are JSON strings.",
        "The edge serves this API's OpenAPI 2.0 document at `GET /openapi.json` (docs/openapi.json, public).",
        "",
        "Rate limits: each user (the token's `sub`) has a token bucket of their own per route group, and",
        "each client address on the public methods (register, login, refresh, JWKS, processor webhooks).",
        "Every reply of a limited route carries `RateLimit-Limit`, `RateLimit-Remaining` and",
        "`RateLimit-Reset`; over the limit the reply is 429 with `Retry-After` and reason RATE_LIMITED",
        '(gRPC: RESOURCE_EXHAUSTED). Sizes: envoy/README.md, "Rate limits".',
        *_services(files),
        *_errors(all_files),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render())
