"""Avro schemas for task types, derived deterministically from their pydantic models.

Owns the mapping from Python field types to Avro, the safety rules (no recursive types, no arrays
or maps of empty items: decoding bombs) and the deterministic ``.avsc`` text of a task type
(``streamjobs schemas export``). Does not encode values (:mod:`streamjobs.codec`) or decide
compatibility between versions (:mod:`streamjobs.evolution`).

Values are carried in their JSON form (``model_dump(mode="json")``): datetimes, dates, UUIDs and
decimals travel as strings, and the model parses them back, so no precision is lost.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import types
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticUndefined

from streamjobs.codec import SchemaCodec, parse, schema_fingerprint
from streamjobs.errors import UnsafeSchema

_PRIMITIVES: dict[Any, str] = {
    str: "string",
    int: "long",
    float: "double",
    bool: "boolean",
    bytes: "string",  # JSON mode carries bytes as text
    dt.datetime: "string",
    dt.date: "string",
    dt.time: "string",
    dt.timedelta: "string",
    uuid.UUID: "string",
    decimal.Decimal: "string",
}

_NAMESPACE = "io.streamjobs.tasks"


class _Deriver:
    """Walks a model's fields; tracks the records on the current path to reject recursion."""

    def __init__(self) -> None:
        self.path: list[type[BaseModel]] = []
        self.defined: set[str] = set()

    def record(self, model: type[BaseModel], name: str) -> Any:
        if model in self.path:
            raise UnsafeSchema(f"{model.__name__} is recursive; task schemas must be finite")
        if name in self.defined:
            return f"{_NAMESPACE}.{name}"
        self.path.append(model)
        fields = [self.field(fname, info) for fname, info in model.model_fields.items()]
        self.path.pop()
        self.defined.add(name)
        return {"type": "record", "name": name, "namespace": _NAMESPACE, "fields": fields}

    def field(self, name: str, info: Any) -> dict[str, Any]:
        avro = self.type(info.annotation)
        out: dict[str, Any] = {"name": name, "type": avro}
        if info.default is not PydanticUndefined or info.default_factory is not None:
            default = info.get_default(call_default_factory=True)
            # the JSON form model_dump(mode="json") gives the value (str() of an Enum, timedelta or
            # set default is not it, and the model would refuse it when filled in on decode)
            default = TypeAdapter(info.annotation).dump_python(default, mode="json")
            if isinstance(avro, list) and default is not None and avro[0] == "null":
                out["type"] = [*avro[1:], "null"]  # a union's default must match its first branch
            out["default"] = default
        return out

    def type(self, annotation: Any) -> Any:
        origin = get_origin(annotation)
        args = get_args(annotation)
        if annotation in _PRIMITIVES:
            return _PRIMITIVES[annotation]
        if origin in (Union, types.UnionType):
            return self.union(args)
        if origin is Literal or (
            isinstance(annotation, type) and issubclass(annotation, enum.Enum)
        ):
            return "string"
        if origin in (list, tuple, set, frozenset):
            return {"type": "array", "items": self.container_item(annotation, args)}
        if origin is dict:
            if args and args[0] is not str:
                raise UnsafeSchema(f"map keys must be str, got {args[0]!r}")
            return {"type": "map", "values": self.container_item(annotation, args[1:])}
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.record(annotation, annotation.__name__)
        raise UnsafeSchema(f"no Avro mapping for field type {annotation!r}")

    def union(self, args: tuple[Any, ...]) -> list[Any]:
        branches = [self.type(a) for a in args if a is not type(None)]
        if len(branches) != 1:
            raise UnsafeSchema(f"only Optional[X] unions are supported, got {args!r}")
        return ["null", branches[0]] if type(None) in args else branches

    def container_item(self, annotation: Any, args: tuple[Any, ...]) -> Any:
        if not args or (len(args) == 2 and args[1] is Ellipsis and args[0] is Any):
            raise UnsafeSchema(f"container {annotation!r} needs an item type")
        item = args[0]
        if item is None or item is type(None):  # get_args(list[None]) == (None,)
            raise UnsafeSchema("arrays of null are decoding bombs and are refused")
        avro = self.type(item)
        if isinstance(avro, dict) and avro.get("type") == "record" and not avro["fields"]:
            raise UnsafeSchema("arrays of empty records are decoding bombs and are refused")
        return avro


def derive_schema(model: type[BaseModel], name: str) -> dict[str, Any]:
    """The Avro record schema of ``model``, named ``name``; same model, same schema, always."""
    schema: dict[str, Any] = _Deriver().record(model, _avro_name(name))
    check_safe(schema)  # also sees bombs through named references: list[Empty] after Empty
    parse(schema)
    return schema


_MAX_DEPTH = 100  # schema nodes deep; far beyond any task model, far below a stack overflow


def check_safe(schema: Any) -> None:
    """Refuse schemas that are decoding bombs: recursion, deep nesting, and arrays or maps whose
    items can take zero bytes (null, records of only such fields, ``fixed`` of size 0).

    Applied to every writer schema read from Kafka before fastavro sees it (a deeply recursive
    schema can crash the process; a 5-byte ``array<null>`` expands to millions of items).
    """
    named: dict[str, list[dict[str, Any]]] = {}
    _collect_named(schema, named, 0)
    _SafetyCheck(named).node(schema, (), 0)


def _too_deep(depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise UnsafeSchema(f"schema nested deeper than {_MAX_DEPTH} levels")


def _collect_named(node: Any, named: dict[str, list[dict[str, Any]]], depth: int) -> None:
    """Every named type definition by short name (references may use either spelling)."""
    _too_deep(depth)
    if isinstance(node, list):
        for branch in node:
            _collect_named(branch, named, depth + 1)
    elif isinstance(node, dict):
        if node.get("type") in ("record", "error", "enum", "fixed") and "name" in node:
            named.setdefault(str(node["name"]).rsplit(".", 1)[-1], []).append(node)
        fields = node.get("fields")
        children = [node.get("type"), node.get("items"), node.get("values")]
        if isinstance(fields, list):
            children += [f.get("type") for f in fields if isinstance(f, dict)]
        for child in children:
            if isinstance(child, dict | list):
                _collect_named(child, named, depth + 1)


class _SafetyCheck:
    """One walk of a schema; ``path`` holds the records enclosing the current node."""

    def __init__(self, named: dict[str, list[dict[str, Any]]]) -> None:
        self.named = named

    def node(self, schema: Any, path: tuple[str, ...], depth: int) -> None:
        _too_deep(depth)
        if isinstance(schema, str):
            if schema.rsplit(".", 1)[-1] in path:
                raise UnsafeSchema(f"recursive reference to {schema!r}")
        elif isinstance(schema, list):
            for branch in schema:
                self.node(branch, path, depth + 1)
        elif isinstance(schema, dict):
            self.complex(schema, path, depth)
        else:
            raise UnsafeSchema(f"not an Avro schema node: {schema!r}")

    def complex(self, schema: dict[str, Any], path: tuple[str, ...], depth: int) -> None:
        kind = schema.get("type")
        if kind in ("record", "error"):
            inner = (*path, str(schema.get("name", "")).rsplit(".", 1)[-1])
            fields = schema.get("fields", [])
            if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
                raise UnsafeSchema(f"record {schema.get('name')!r} has malformed fields")
            for field in fields:
                self.node(field.get("type"), inner, depth + 1)
        elif kind in ("array", "map"):
            items = schema.get("items" if kind == "array" else "values")
            self.node(items, path, depth + 1)
            if self.zero_width(items, frozenset(), depth + 1):
                raise UnsafeSchema(f"{kind} of null or empty records is refused")
        elif isinstance(kind, dict | list):
            self.node(kind, path, depth + 1)

    def zero_width(self, node: Any, seen: frozenset[str], depth: int) -> bool:
        """Whether a value of ``node`` can be encoded in zero bytes (an array of it is a bomb)."""
        _too_deep(depth)
        if isinstance(node, str):
            short = node.rsplit(".", 1)[-1]
            if node == "null":
                return True
            if short in seen:  # recursion is refused by the walk itself
                return False
            found = self.named.get(short, [])
            return any(self.zero_width(d, seen | {short}, depth + 1) for d in found)
        if isinstance(node, list):  # a union writes its branch index, but refuse ["null"] anyway
            return all(self.zero_width(b, seen, depth + 1) for b in node)
        if not isinstance(node, dict):
            return False
        kind = node.get("type")
        if kind in ("record", "error"):
            fields = node.get("fields")
            fields = fields if isinstance(fields, list) else []  # malformed: the walk refuses it
            return all(
                isinstance(f, dict) and self.zero_width(f.get("type"), seen, depth + 1)
                for f in fields
            )
        if kind == "fixed":
            return node.get("size") == 0
        if kind in ("array", "map", "enum"):
            return False
        return self.zero_width(kind, seen, depth + 1)  # {"type": "null"}, {"type": {...}}


def _avro_name(task_name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in task_name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"T_{cleaned}"


class TaskType:
    """A task class with its derived schema and codec, ready to encode and decode payloads."""

    __slots__ = ("codec", "model", "name")

    def __init__(self, model: type[BaseModel], name: str) -> None:
        self.model = model
        self.name = name
        self.codec = SchemaCodec(derive_schema(model, name))

    @property
    def fingerprint(self) -> bytes:
        return self.codec.fingerprint

    def encode(self, task: BaseModel) -> bytes:
        return self.codec.encode_body(task.model_dump(mode="json", warnings=False))


def schema_text(task_type: TaskType) -> str:
    """``task_type``'s schema as deterministic JSON text (sorted keys), as ``.avsc`` files hold."""
    return json.dumps(task_type.codec.schema, indent=2, sort_keys=True) + "\n"


def export_schemas(task_types: Iterable[TaskType], directory: Path) -> list[Path]:
    """Write ``<task name>.avsc`` for each task type into ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task_type in task_types:
        safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in task_type.name)
        path = directory / f"{safe.lstrip('.') or '_'}.avsc"
        path.write_text(schema_text(task_type), encoding="utf-8")
        written.append(path)
    return written


__all__ = [
    "TaskType",
    "check_safe",
    "derive_schema",
    "export_schemas",
    "schema_fingerprint",
    "schema_text",
]
