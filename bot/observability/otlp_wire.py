"""OTLP/protobuf written by hand: the few messages a trace export is made of.

The export process (decision 0026) builds each span's bytes once, when the span ends, instead of
building OpenTelemetry span objects for the SDK's encoder to walk again. Only what Langfuse's
spans use is here: string, bool and string-array attribute values, spans without events or links,
one resource and one instrumentation scope per request. Field numbers are those of
`opentelemetry/proto/{common,resource,trace}/v1/*.proto`; the tests decode every request with
the generated classes (`opentelemetry.proto`) and compare it with the SDK's own encoding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")

# Tags (field number << 3 | wire type) of the fields written below.
_KEY = b"\x0a"  # KeyValue.key = 1
_VALUE = b"\x12"  # KeyValue.value = 2
_STRING = b"\x0a"  # AnyValue.string_value = 1
_BOOL = b"\x10"  # AnyValue.bool_value = 2 (varint)
_ARRAY = b"\x2a"  # AnyValue.array_value = 5
_ARRAY_VALUES = b"\x0a"  # ArrayValue.values = 1

# Span.kind = 6: SPAN_KIND_INTERNAL (1), what every Langfuse observation is.
_KIND_INTERNAL = b"\x30\x01"
# Span.flags = 16 (fixed32): SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK; no parent here is remote.
_FLAGS = b"\x85\x01" + _FIXED32.pack(0x100)
STATUS_UNSET = 0
STATUS_ERROR = 2


_SMALL = tuple(bytes((n,)) for n in range(0x80))


def varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field."""
    size = len(payload)
    return tag + (_SMALL[size] if size < 0x80 else varint(size)) + payload


def utf8(text: str) -> bytes:
    # A lone surrogate cannot be sent as UTF-8; the SDK's encoder would fail the whole batch.
    return text.encode("utf-8", "replace")


def string_value(text: str) -> bytes:
    return field(_STRING, utf8(text))


def any_value(value: object) -> bytes:
    """An `AnyValue` of a resource attribute (str, bool, int, float or a sequence of str)."""
    if isinstance(value, bool):
        return _BOOL + (b"\x01" if value else b"\x00")
    if isinstance(value, int):
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + struct.pack("<d", value)
    if isinstance(value, str):
        return string_value(value)
    if isinstance(value, Sequence):
        return field(_ARRAY, b"".join(field(_ARRAY_VALUES, any_value(v)) for v in value))
    return string_value(str(value))


_KEYS: dict[str, bytes] = {}


def _key(key: str) -> bytes:
    # Spans repeat a few dozen keys: each is encoded once.
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = field(_KEY, key.encode())
        if len(_KEYS) < 4096:
            _KEYS[key] = encoded
    return encoded


def key_value(key: str, value: bytes) -> bytes:
    """A `KeyValue` (without its own tag) from an encoded `AnyValue`."""
    return _key(key) + field(_VALUE, value)


def string_attribute(key: str, text: str) -> bytes:
    data = utf8(text)
    size = len(data)
    value = _STRING + (_SMALL[size] if size < 0x80 else varint(size)) + data
    return _key(key) + field(_VALUE, value)


def bool_attribute(key: str, value: bool) -> bytes:
    return key_value(key, _BOOL + (b"\x01" if value else b"\x00"))


def strings_attribute(key: str, texts: Iterable[str]) -> bytes:
    values = b"".join(field(_ARRAY_VALUES, string_value(text)) for text in texts)
    return key_value(key, field(_ARRAY, values))


def attributes_field(tag: bytes, encoded: Iterable[bytes]) -> bytes:
    """Repeated `KeyValue` fields under `tag`."""
    return b"".join(field(tag, item) for item in encoded)


def span(
    *,
    trace_id: bytes,
    span_id: bytes,
    parent_id: bytes | None,
    name: str,
    start_ns: int,
    end_ns: int,
    attributes: Iterable[bytes],
    status_code: int,
    status_message: str | None,
) -> bytes:
    """A `Span` message (without its own tag), fields in the generated encoder's order."""
    status = b""
    if status_message:
        status += field(b"\x12", utf8(status_message))
    if status_code:
        status += b"\x18" + varint(status_code)
    return b"".join(
        (
            field(b"\x0a", trace_id),
            field(b"\x12", span_id),
            field(b"\x22", parent_id) if parent_id is not None else b"",
            field(b"\x2a", utf8(name)),
            _KIND_INTERNAL,
            b"\x39" + _FIXED64.pack(start_ns),
            b"\x41" + _FIXED64.pack(end_ns),
            attributes_field(b"\x4a", attributes),
            field(b"\x7a", status),
            _FLAGS,
        )
    )


def scope(name: str, version: str, attributes: Sequence[bytes]) -> bytes:
    """An `InstrumentationScope`."""
    return (
        field(b"\x0a", name.encode())
        + field(b"\x12", version.encode())
        + attributes_field(b"\x1a", attributes)
    )


def request(
    resource_attributes: Sequence[bytes], scope_message: bytes, spans: Sequence[bytes]
) -> bytes:
    """An `ExportTraceServiceRequest` of one resource and one scope."""
    scope_spans = field(b"\x0a", scope_message) + b"".join(field(b"\x12", s) for s in spans)
    resource = attributes_field(b"\x0a", resource_attributes)
    resource_spans = field(b"\x0a", resource) + field(b"\x12", scope_spans)
    return field(b"\x0a", resource_spans)
