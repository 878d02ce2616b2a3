"""Checks every request before its handler runs: it decodes, and no string in it holds a NUL.

The mesh interceptor gives each method `checked(deserializer)` as its request
deserializer, so no handler can forget either check:

- A request that does not decode becomes INVALID_ARGUMENT (VALIDATION_FAILED)
  instead of grpc's UNKNOWN with the decoder's class name. The usual cause is
  invalid UTF-8 in a string field (Envoy passes `%FF` in a path parameter
  through); the field is then found and named in a BadRequest.
- A string field holding U+0000 becomes VALIDATION_FAILED naming the field:
  PostgreSQL cannot store NUL in text, and no paymesh field has a use for it.

Both read the request's wire bytes, not the decoded message. Cost: the NUL
search runs only when the raw request holds a zero byte at all (one memchr).
A string with NUL holds one, and so do a few honest requests (an empty nested
message, an explicit 0 in a oneof, zero bytes in a `bytes` field); the search
then enters only the nested messages whose bytes hold a zero. Figures in
docs/architecture.md ("Errors").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from paymesh_runtime.errors import InvalidArgument, PaymeshError, validation_failed
from paymesh_runtime.pagination import invalid_page_token

Deserializer = Callable[[bytes], Any]

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_LENGTH_DELIMITED = 2
_WIRE_SKIP = {0: -1, 1: 8, 5: 4}  # varint (-1: read it), fixed64, fixed32


class Refused:
    """What the deserializer hands the interceptor instead of a request it refuses."""

    __slots__ = ("error",)

    def __init__(self, error: PaymeshError) -> None:
        self.error = error


def checked(deserializer: Deserializer | None) -> Deserializer | None:
    """`deserializer` answering a Refused instead of raising, or of a request with a NUL in a string."""
    if deserializer is None:
        return None
    message_type = getattr(deserializer, "__self__", None)  # the generated FromString is a classmethod
    descriptor: Descriptor | None = getattr(message_type, "DESCRIPTOR", None)

    def deserialize(raw: bytes) -> Any:
        try:
            request = deserializer(raw)
        except Exception:  # DecodeError, or whatever a custom deserializer raises
            return Refused(undecodable(raw, descriptor))
        if b"\x00" in raw and descriptor is not None:
            field = string_field(raw, descriptor, _holds_nul)
            if field is not None:
                return Refused(_invalid(field, "must not contain the NUL character (U+0000)"))
        return request

    return deserialize


def undecodable(raw: bytes, descriptor: Descriptor | None) -> InvalidArgument:
    """The error of a request that does not decode, naming the string field with invalid UTF-8 if there is one."""
    field = string_field(raw, descriptor, _not_utf8) if descriptor is not None else None
    if field is not None:
        return _invalid(field, "is not valid UTF-8")
    kind = descriptor.full_name if descriptor is not None else "request"
    return InvalidArgument("VALIDATION_FAILED", f"the request is not a valid {kind} message")


def _invalid(field: str, problem: str) -> InvalidArgument:
    # A page token that is not even text is an invalid page token, like any other undecodable one.
    return invalid_page_token() if field == "page_token" else validation_failed(field, problem)


class _Search(NamedTuple):
    """What string_field looks for: a string's bytes that are `bad`, in chunks that `may_hold` one."""

    bad: Callable[[bytes], bool]
    may_hold: Callable[[bytes], bool]


def _has_nul(chunk: bytes) -> bool:
    return b"\x00" in chunk


def _is_not_utf8(chunk: bytes) -> bool:
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


_holds_nul = _Search(bad=_has_nul, may_hold=_has_nul)
# ASCII is valid UTF-8: a nested message whose bytes are all ASCII (bytes.isascii, in C) is skipped.
_not_utf8 = _Search(bad=_is_not_utf8, may_hold=lambda chunk: not chunk.isascii())


def string_field(raw: bytes, descriptor: Descriptor, search: _Search, prefix: str = "") -> str | None:
    """The path (e.g. `transactions[3].postings[1].amount.currency`) of the first string field, nested ones
    included, whose bytes are `search.bad`, read from the wire format.

    Reads only tags and lengths, and enters a nested message only if its bytes
    `may_hold` a match, so the walk follows one path down a large request.
    Returns None for anything it cannot follow (the caller then names no field).
    """
    fields = _fields_of(descriptor)
    seen: dict[int, int] = {}
    pos, end = 0, len(raw)
    try:
        while pos < end:
            key = raw[pos]
            key, pos = (key, pos + 1) if key < 0x80 else _varint(raw, pos)  # most tags are one byte
            number, wire_type = key >> 3, key & 7
            if wire_type != _LENGTH_DELIMITED:
                skip = _WIRE_SKIP.get(wire_type)
                if skip is None:
                    return None  # groups (not in proto3) or garbage
                pos = _varint(raw, pos)[1] if skip < 0 else pos + skip
                continue
            length, pos = _varint(raw, pos)
            start, pos = pos, pos + length
            field = fields.get(number)
            if field is None or pos > end:
                continue
            index = seen[number] = seen.get(number, -1) + 1
            chunk = raw[start:pos]
            if field.nested is None:
                if search.bad(chunk):
                    return field.path(prefix, index)
            elif search.may_hold(chunk):
                found = string_field(chunk, field.nested, search, field.path(prefix, index) + ".")
                if found is not None:
                    return found
    except IndexError:
        return None
    return None


class _Field(NamedTuple):
    """A string or message field, as string_field needs it."""

    name: str
    nested: Descriptor | None  # the message type; None for a string
    indexed: bool  # repeated, and not a map (whose entries have no index)

    def path(self, prefix: str, index: int) -> str:
        return f"{prefix}{self.name}[{index}]" if self.indexed else prefix + self.name


_FIELDS: dict[str, dict[int, _Field]] = {}


def _fields_of(descriptor: Descriptor) -> dict[int, _Field]:
    """The string and message fields of a message type by number, built once per type."""
    fields = _FIELDS.get(descriptor.full_name)
    if fields is None:
        fields = {}
        for field in descriptor.fields:
            nested = field.message_type if field.type == _MESSAGE else None
            if field.type == _STRING or nested is not None:
                is_map = nested is not None and bool(nested.GetOptions().map_entry)
                fields[field.number] = _Field(field.name, nested, field.is_repeated and not is_map)
        _FIELDS[descriptor.full_name] = fields
    return fields


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")
