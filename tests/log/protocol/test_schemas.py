"""Every message streamer declares matches Kafka's schema at every version it serves."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from streamer.log.protocol.apis import APIS
from streamer.log.protocol.schema import Api, Kind

from .kafka_schemas import SchemaField, fields_at, flexible_from, valid_versions

CASES = [
    (api, side, version)
    for api in APIS.values()
    for side in ("Request", "Response")
    for version in range(api.min_version, api.max_version + 1)
]


def _wire_type(kind: Kind) -> str:
    if kind.element is not None:
        element = kind.element
        return "[]" + (_wire_type(element) if isinstance(element, Kind) else "Struct")
    return {"nullable string": "string", "nullable bytes": "bytes"}.get(kind.name, kind.name)


def _ours(cls: type, version: int) -> list[tuple[str, Kind]]:
    out = []
    for field in dataclasses.fields(cls):
        spec = field.metadata["kafka"]
        if spec.since <= version and (spec.until is None or version <= spec.until):
            out.append((field.name, spec.kind))
    return out


def _compare(cls: type, theirs: tuple[SchemaField, ...], version: int, path: str) -> None:
    ours = _ours(cls, version)
    assert [_wire_type(kind) for _, kind in ours] == [field.type for field in theirs], (
        f"{path} v{version}: ours {[(n, _wire_type(k)) for n, k in ours]} "
        f"vs Kafka's {[(field.name, field.type) for field in theirs]}"
    )
    for (name, kind), field in zip(ours, theirs, strict=True):
        if field.nullable:
            assert kind.default is None, f"{path}.{name} v{version} must accept null"
        if field.type.endswith("Struct"):
            element: Any = kind.element
            _compare(element, field.children, version, f"{path}.{name}")


@pytest.mark.parametrize(
    ("api", "side", "version"), CASES, ids=[f"{a.name}{s}-v{v}" for a, s, v in CASES]
)
def test_matches_kafka_schema(api: Api, side: str, version: int) -> None:
    schema_name = f"{api.name}{side}"
    low, high = valid_versions(schema_name)
    assert low <= version <= high, f"{schema_name} v{version} is not a Kafka version"
    cls = api.request if side == "Request" else api.response
    _compare(cls, fields_at(schema_name, version), version, cls.__name__)


@pytest.mark.parametrize("api", list(APIS.values()), ids=lambda a: a.name)
def test_flexible_versions_match_kafka(api: Api) -> None:
    first = flexible_from(f"{api.name}Request")
    if first is not None and first <= api.max_version:
        assert api.flexible_from == first
    else:
        assert api.flexible_from is None or api.flexible_from == first
