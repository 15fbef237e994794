"""Apache Kafka's JSON message schemas, as vendored by kafka-python, read as test oracles.

streamer declares its messages in Python (``streamer.log.protocol.messages``); these tests
check each declaration, version by version, against the field order and wire types that
Kafka's own schema gives. kafka-python is a test dependency, so nothing here ships.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import kafka.protocol

__all__ = ["SchemaField", "fields_at", "load", "valid_versions"]

_RESOURCES = Path(kafka.protocol.__file__).parent / "schemas" / "resources"


@dataclass(frozen=True)
class SchemaField:
    name: str
    type: str  # "int32", "string", "[]int32", "[]Struct", ...
    nullable: bool
    children: tuple[SchemaField, ...]


@cache
def load(name: str) -> dict[str, Any]:
    text = (_RESOURCES / f"{name}.json").read_text()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    text = re.sub(r"//[^\n\"]*$", "", text, flags=re.MULTILINE)
    schema: dict[str, Any] = json.loads(text)
    return schema


def _in(spec: str | None, version: int) -> bool:
    if not spec or spec == "none":
        return False
    if spec.endswith("+"):
        return version >= int(spec[:-1])
    if "-" in spec:
        low, high = spec.split("-")
        return int(low) <= version <= int(high)
    return version == int(spec)


def valid_versions(name: str) -> tuple[int, int]:
    low, _, high = load(name)["validVersions"].partition("-")
    return int(low), int(high or low)


def flexible_from(name: str) -> int | None:
    spec = load(name)["flexibleVersions"]
    return None if spec == "none" else int(spec.rstrip("+"))


def _common_structs(name: str) -> dict[str, list[dict[str, Any]]]:
    return {s["name"]: s["fields"] for s in load(name).get("commonStructs", [])}


def fields_at(name: str, version: int) -> tuple[SchemaField, ...]:
    """The untagged fields of message ``name`` at ``version``, in wire order."""
    return _fields(load(name)["fields"], version, _common_structs(name))


def _fields(
    raw: list[dict[str, Any]], version: int, common: dict[str, list[dict[str, Any]]]
) -> tuple[SchemaField, ...]:
    out = []
    for field in raw:
        if not _in(field.get("versions"), version) or _in(field.get("taggedVersions"), version):
            continue
        kind: str = field["type"]
        children: tuple[SchemaField, ...] = ()
        element = kind[2:] if kind.startswith("[]") else kind
        if element[:1].isupper():
            sub = field.get("fields") or common.get(element, [])
            children = _fields(sub, version, common)
            kind = "[]Struct" if kind.startswith("[]") else "Struct"
        nullable = _in(field.get("nullableVersions"), version)
        out.append(SchemaField(field["name"], kind, nullable, children))
    return tuple(out)
