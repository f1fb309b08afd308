"""Schema evolution: whether tasks written with one Avro schema can be read with another.

Owns the compatibility rule ``streamjobs schemas check`` applies, as pure functions over schema
dicts: a reader can decode a writer's data when every reader field the writer lacks has a
default, fields present in both keep a compatible type, and nested records keep their name,
checked field by field down through records, arrays, maps and ``Optional`` unions. Queued tasks
need the rule both ways during a rolling deploy: new workers read tasks queued by old producers
(backward) and old workers read tasks from new producers (forward), so removing a field without
a default breaks as surely as adding one. Does not read Kafka (:mod:`streamjobs.schemastore`)
or derive schemas (:mod:`streamjobs.tasktypes`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_RECORD_TYPES = ("record", "error")


def check_compatible(reader: dict[str, Any], writer: dict[str, Any]) -> list[str]:
    """Problems that stop ``reader`` from decoding data written with ``writer`` (empty = OK).

    Fields are named by their dotted path (``'home.city'``; ``[]`` for array items, ``{}`` for
    map values), in the reader's field order.
    """
    walk = _Walk(reader, writer)
    walk.node(reader, writer, "")
    return [problem.text for problem in walk.problems]


def breaking_changes(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """Problems between a task type's ``new`` schema and an ``old`` writer schema of it: the new
    model cannot read old tasks (backward), or an old worker cannot read new tasks (a field it
    needs without a default was removed)."""
    problems = check_compatible(new, old)
    forward = _Walk(old, new)
    forward.node(old, new, "")
    problems += [
        f"removed field {p.path!r} has no default (workers on the old model cannot read new tasks)"
        for p in forward.problems
        if p.missing
    ]
    return problems


@dataclass(frozen=True, slots=True)
class _Problem:
    path: str
    text: str
    missing: bool  # a reader field absent from the writer, with no default


@dataclass
class _Walk:
    """One side-by-side walk of a reader and a writer schema; named types resolved per side."""

    reader: dict[str, Any]
    writer: dict[str, Any]
    problems: list[_Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reader_names = _named(self.reader)
        self._writer_names = _named(self.writer)

    def node(self, reader: Any, writer: Any, path: str) -> None:
        reader = _resolve(reader, self._reader_names)
        writer = _resolve(writer, self._writer_names)
        r_kind, r_shape = _kind(reader), _shape(reader, self._reader_names)
        w_shape = _shape(writer, self._writer_names)
        if r_kind != _kind(writer) or r_shape != w_shape:
            self._changed(path, w_shape, r_shape)
        elif r_kind in _RECORD_TYPES:
            self.record(reader, writer, path)
        elif r_kind == "array":
            self.node(reader["items"], writer["items"], f"{path}[]")
        elif r_kind == "map":
            self.node(reader["values"], writer["values"], f"{path}{{}}")
        elif r_kind == "union":
            self.union(reader, writer, path)

    def record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        r_name, w_name = _short(reader["name"]), _short(writer["name"])
        if r_name != w_name:
            self._changed(path, f"record {w_name}", f"record {r_name}")
            return
        writer_fields = {f["name"]: f for f in writer.get("fields", [])}
        for reader_field in reader.get("fields", []):
            name = f"{path}.{reader_field['name']}" if path else reader_field["name"]
            old = writer_fields.get(reader_field["name"])
            if old is not None:
                self.node(reader_field["type"], old["type"], name)
            elif "default" not in reader_field:
                self.problems.append(_Problem(name, f"new field {name!r} has no default", True))

    def union(self, reader: list[Any], writer: list[Any], path: str) -> None:
        """``Optional[X]`` either way round: compare the X branches (shapes already match)."""
        r_rest = [b for b in reader if b != "null"]
        w_rest = [b for b in writer if b != "null"]
        if len(r_rest) == len(w_rest) == 1:
            self.node(r_rest[0], w_rest[0], path)

    def _changed(self, path: str, old: str, new: str) -> None:
        self.problems.append(_Problem(path, f"field {path!r} changed type {old} -> {new}", False))


def _named(schema: Any) -> dict[str, dict[str, Any]]:
    """Every named type definition in ``schema`` by full and short name."""
    found: dict[str, dict[str, Any]] = {}
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("type") in (*_RECORD_TYPES, "enum", "fixed") and "name" in node:
                name = str(node["name"])
                namespace = node.get("namespace")
                if namespace and "." not in name:
                    found[f"{namespace}.{name}"] = node
                found.setdefault(name, node)
                found.setdefault(_short(name), node)
            stack.extend([node.get("type"), node.get("items"), node.get("values")])
            stack.extend(f.get("type") for f in node.get("fields", []) if isinstance(f, dict))
    return found


def _resolve(node: Any, names: dict[str, dict[str, Any]]) -> Any:
    """A named reference as its definition; ``{"type": X}`` wrapping a non-primitive as X."""
    if isinstance(node, str):
        return names.get(node, node)
    if isinstance(node, dict):
        inner = node.get("type")
        if isinstance(inner, dict | list) or (isinstance(inner, str) and inner in names):
            return _resolve(inner, names)
    return node


def _kind(node: Any) -> str:
    if isinstance(node, list):
        return "union"
    if isinstance(node, dict):
        return str(node.get("type"))
    return str(node)


def _shape(avro: Any, names: dict[str, dict[str, Any]]) -> str:
    """The type's kind (``long``, ``record``, ``array``; a union's sorted branches)."""
    avro = _resolve(avro, names)
    if isinstance(avro, list):
        return "|".join(sorted(_shape(a, names) for a in avro))
    return _kind(avro)


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


__all__ = ["breaking_changes", "check_compatible"]
