"""Hypothesis strategies for the requests and responses of any served API at any version.

A drawn message has a value (usually not the default) in every field its version carries and
the default in every other, so it equals itself after an encode and a decode. Nulls are drawn
only where Kafka's schema allows them at that version.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import strategies as st
from streamer.log.protocol.apis import APIS
from streamer.log.protocol.schema import Api, Kind

from .kafka_schemas import SchemaField, fields_at

__all__ = ["CASES", "case_id", "requests", "responses", "wire_fields", "wire_values"]

# Every (API, version) streamer serves.
CASES: list[tuple[Api, int]] = [
    (api, version)
    for api in APIS.values()
    for version in range(api.min_version, api.max_version + 1)
]


def case_id(case: tuple[Api, int]) -> str:
    api, version = case
    return f"{api.name}-v{version}"


def wire_fields(cls: type, version: int) -> list[tuple[str, Kind]]:
    """The fields ``cls`` carries at ``version``, in wire order."""
    out = []
    for field in dataclasses.fields(cls):
        spec = field.metadata["kafka"]
        if spec.since <= version and (spec.until is None or version <= spec.until):
            out.append((field.name, spec.kind))
    return out


def wire_values(value: Any, version: int) -> tuple[Any, ...]:
    """A message as nested tuples of the values on the wire (structs in arrays as tuples)."""
    out = []
    for name, kind in wire_fields(type(value), version):
        item = getattr(value, name)
        if kind.element is not None and not isinstance(kind.element, Kind) and item is not None:
            item = [wire_values(element, version) for element in item]
        out.append(item)
    return tuple(out)


_TEXT: Any = st.text(max_size=12)  # any code point but surrogates: UTF-8 encodes it
_SCALARS: dict[str, Any] = {
    "int8": st.integers(-(2**7), 2**7 - 1),
    "int16": st.integers(-(2**15), 2**15 - 1),
    "int32": st.integers(-(2**31), 2**31 - 1),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "uint32": st.integers(0, 2**32 - 1),
    "float64": st.floats(allow_nan=False),
    "bool": st.booleans(),
    "uuid": st.uuids(),
    "string": _TEXT,
    "nullable string": st.none() | _TEXT,
    "bytes": st.binary(max_size=12),
    "nullable bytes": st.none() | st.binary(max_size=12),
    "records": st.none() | st.binary(max_size=24),
}


def _values_of(kind: Kind, version: int, theirs: SchemaField) -> Any:
    if kind.element is not None:
        element = kind.element
        if isinstance(element, Kind):
            items = _values_of(element, version, theirs)
        else:
            items = _structs(element, version, theirs.children)
        values = st.lists(items, max_size=3)
    else:
        values = _SCALARS[kind.name]
    # Null only where Kafka allows it at this version (clients refuse it elsewhere).
    return st.none() | values if theirs.nullable and kind.default is None else values


def _structs(cls: type, version: int, theirs: tuple[SchemaField, ...]) -> Any:
    ours = wire_fields(cls, version)
    fields = {
        name: _values_of(kind, version, field)
        for (name, kind), field in zip(ours, theirs, strict=True)
    }
    return st.builds(cls, **fields)


def requests(api: Api, version: int) -> Any:
    """Requests of ``api`` at ``version`` with random values in every field it carries."""
    return _structs(api.request, version, fields_at(f"{api.name}Request", version))


def responses(api: Api, version: int) -> Any:
    """Responses of ``api`` at ``version`` with random values in every field it carries."""
    return _structs(api.response, version, fields_at(f"{api.name}Response", version))
