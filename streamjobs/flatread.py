"""Straight-line decoding of flat Avro records: the fast path for records read by the million.

Owns :class:`FlatReader`, which reads a framed record whose fields are all strings, ints or
longs, or ``["null", X]`` of one, into a list of values in field order, and answers None for
anything it does not read cleanly (another fingerprint, truncation, bad UTF-8, a bad union
branch, trailing bytes), so the caller falls back to :mod:`streamjobs.codec` for the precise
error. With ``fields=n`` it reads only the first ``n`` fields (a record's head: what a
reader of millions needs to decide whether it wants the rest) and ignores what follows.
Does not know any schema of its own or raise decode errors.
"""

from __future__ import annotations

from typing import Any

from streamjobs.codec import HEADER_SIZE


def _plan(kind: Any) -> tuple[bool, bool]:
    """(nullable, string) of a field type."""
    nullable = isinstance(kind, list)
    return nullable, (kind[-1] if nullable else kind) == "string"


class FlatReader:
    """Reads records of one flat schema framed with ``header`` (magic + fingerprint)."""

    def __init__(self, schema: dict[str, Any], header: bytes, fields: int | None = None) -> None:
        self._plan = tuple(_plan(f["type"]) for f in schema["fields"][:fields])
        self._whole = fields is None
        self._header = header
        if len(header) != HEADER_SIZE:
            raise ValueError("header must be the single-object framing of the schema")

    def read(self, data: bytes) -> list[Any] | None:
        """The record's values in field order (its head's, with ``fields``), or None when
        anything is off."""
        if data[:HEADER_SIZE] != self._header:
            return None
        try:
            values, pos = self._fields(data)
        except (IndexError, UnicodeDecodeError, ValueError):
            return None
        return values if pos == len(data) or not self._whole else None

    def _fields(self, data: bytes) -> tuple[list[Any], int]:
        values: list[Any] = []
        append = values.append
        pos = HEADER_SIZE
        size = len(data)
        for nullable, is_string in self._plan:
            if nullable:
                branch = data[pos]
                pos += 1
                if branch == 0:
                    append(None)
                    continue
                if branch != 2:
                    raise ValueError(branch)
            byte = data[pos]
            pos += 1
            if byte < 0x80:
                number = (byte >> 1) ^ -(byte & 1)
            else:  # inline: a call per long field costs more than the loop (times, versions)
                number, shift = byte & 0x7F, 7
                while True:
                    byte = data[pos]
                    pos += 1
                    number |= (byte & 0x7F) << shift
                    if byte < 0x80:
                        break
                    shift += 7
                number = (number >> 1) ^ -(number & 1)
            if is_string:
                end = pos + number
                if number < 0 or end > size:
                    raise ValueError(number)
                append(data[pos:end].decode())
                pos = end
            else:
                append(number)
        return values, pos
