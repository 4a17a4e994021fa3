"""Which field of an undecodable request holds text that is not UTF-8 (to name it in the error).

protobuf refuses a proto3 string that is not UTF-8 with a bare DecodeError; this walks the
wire format against the method's descriptor to find the first such field and its path
(`requests[0].job.command[1]`). Anything it cannot follow (truncated bytes, groups, deep
nesting) gives None: the caller then answers without a field, as before.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from broker.errors import BrokerError

MAX_DEPTH = 32
_FIXED = {1: 8, 5: 4}
"""Wire types of fixed size: 64-bit and 32-bit."""


class _Stop(BrokerError):
    """The bytes cannot be followed any further."""


def _varint(raw: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(raw) or shift > 63:
            raise _Stop
        byte = raw[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def non_utf8_field(raw: bytes, message: Descriptor) -> str | None:
    """The path of the first string field in `raw` that is not UTF-8, or None."""
    try:
        return _walk(raw, message, "", 0)
    except Exception:  # _Stop, or anything else: it runs on bytes a stranger chose
        return None


def _walk(raw: bytes, message: Descriptor, prefix: str, depth: int) -> str | None:
    if depth > MAX_DEPTH:
        raise _Stop
    seen: dict[int, int] = {}
    pos = 0
    while pos < len(raw):
        key, pos = _varint(raw, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(raw, pos)
            continue
        if wire_type in _FIXED:
            pos += _FIXED[wire_type]
            continue
        if wire_type != 2:
            raise _Stop  # groups and bad wire types: not ours to follow
        size, pos = _varint(raw, pos)
        chunk, pos = raw[pos : pos + size], pos + size
        if len(chunk) < size:
            raise _Stop
        field = message.fields_by_number.get(number)
        if field is None:
            continue
        index = seen.get(number, 0)
        seen[number] = index + 1
        path = f"{prefix}.{field.name}" if prefix else field.name
        map_entry = field.message_type is not None and field.message_type.GetOptions().map_entry
        if field.is_repeated and not map_entry:
            path += f"[{index}]"
        found = _check(chunk, field, path, depth)
        if found is not None:
            return path if map_entry else found
    return None


def _check(chunk: bytes, field: FieldDescriptor, path: str, depth: int) -> str | None:
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            chunk.decode("utf-8")
        except UnicodeDecodeError:
            return path
        return None
    if field.message_type is not None:
        return _walk(chunk, field.message_type, path, depth + 1)
    return None
