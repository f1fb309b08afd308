"""What Kafka keeps about schedules: definitions, states, pauses and triggers, and fire task ids.

Owns the records of the compacted ``<prefix>.schedules`` topic (Avro, ``schemas/schedule_*.avsc``)
as frozen types, their record keys, and the deterministic task id of a fire
(:func:`fire_task_id`: schedule name and due time, so a fire written twice is still one task id).

Keys (one namespace per queue; names are ``[A-Za-z0-9._-]``, so ``/`` and ``:`` never clash):

* ``definition/<queue>/<name>``: :class:`Definition`, written by the CLI and, for schedules
  declared in code, by the leader; a tombstone removes the schedule.
* ``state/<queue>/<name>``: :class:`State`, written only by the leader, in the fire's transaction.
* ``pause/<queue>/<name>``: :class:`Control` with ``paused``, written only by the CLI.
* ``trigger/<queue>/<name>/<id>``: :class:`Control`, written by the CLI, tombstoned by the fire.

Does not decide when to fire (:mod:`streamjobs.scheduler.timing`, ``catchup``) or read Kafka.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from streamjobs.codec import builtin
from streamjobs.errors import ConfigError, DecodeError
from streamjobs.scheduler.catchup import DEFAULT_LIMIT, CatchUp
from streamjobs.scheduler.timing import Cadence

_DEFINITION = builtin("schedule_definition")
_STATE = builtin("schedule_state")
_CONTROL = builtin("schedule_control")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
#: How many recent fires a state record keeps (``schedules show``).
RECENT = 10


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ConfigError(f"schedule name {name!r}: use 1-200 of A-Z a-z 0-9 . _ -")
    return name


@dataclass(frozen=True, slots=True)
class Definition:
    """A schedule: which task it fires (type name and JSON fields), when, and its policy."""

    name: str
    queue: str
    task: str
    args_json: str
    created_at_ms: int
    updated_at_ms: int
    key: str | None = None
    cron: str | None = None
    every_s: int | None = None
    timezone: str = "UTC"
    catch_up: str = CatchUp.LATEST.value
    catch_up_limit: int = DEFAULT_LIMIT
    source: str = "cli"

    def __post_init__(self) -> None:
        check_name(self.name)
        _ = self.cadence  # validates cron, interval and zone
        if self.catch_up not in set(CatchUp):
            raise ConfigError(f"catch_up={self.catch_up!r}: use skip, latest or all")
        if self.catch_up_limit < 1:
            raise ConfigError("catch_up_limit must be at least 1")

    @property
    def cadence(self) -> Cadence:
        every = None if self.every_s is None else timedelta(seconds=self.every_s)
        return Cadence(cron=self.cron, every=every, timezone=self.timezone)

    @property
    def policy(self) -> CatchUp:
        return CatchUp(self.catch_up)

    def same_schedule(self, other: Definition) -> bool:
        """Equal apart from the timestamps: re-declaring it in code changes nothing."""
        return replace(self, created_at_ms=0, updated_at_ms=0) == replace(
            other, created_at_ms=0, updated_at_ms=0
        )


@dataclass(frozen=True, slots=True)
class Fire:
    due_ms: int
    fired_at_ms: int
    task_id: str
    triggered: bool = False

    @property
    def lateness_ms(self) -> int:
        return self.fired_at_ms - self.due_ms


@dataclass(frozen=True, slots=True)
class State:
    """Where a schedule stands; only the leader writes it, with the fires it records."""

    name: str
    queue: str
    updated_at_ms: int
    settled_due_ms: int | None = None
    recent: tuple[Fire, ...] = field(default=())
    fires: int = 0
    skipped: int = 0
    owner: str | None = None
    error: str | None = None

    def fired(self, fire: Fire, *, owner: str) -> State:
        """After ``fire``: recorded first in ``recent``; a cadence fire settles its due time."""
        settled = self.settled_due_ms if fire.triggered else fire.due_ms
        return replace(
            self,
            settled_due_ms=settled,
            recent=(fire, *self.recent)[:RECENT],
            fires=self.fires + 1,
            owner=owner,
            error=None,
            updated_at_ms=fire.fired_at_ms,
        )

    def skipping(self, count: int, until_ms: int, *, owner: str, now_ms: int) -> State:
        return replace(
            self,
            settled_due_ms=until_ms,
            skipped=self.skipped + count,
            owner=owner,
            updated_at_ms=now_ms,
        )

    def failed(self, fire: Fire, error: str, *, owner: str) -> State:
        """``fire`` could not be made: its due time is settled (skipped) and ``error`` kept."""
        skipped = self if fire.triggered else self.skipping(1, fire.due_ms, owner=owner, now_ms=0)
        return replace(skipped, owner=owner, error=error[:1000], updated_at_ms=fire.fired_at_ms)

    @property
    def last_fire(self) -> Fire | None:
        return self.recent[0] if self.recent else None


@dataclass(frozen=True, slots=True)
class Control:
    """A pause switch (``pause/...``) or a trigger request (``trigger/...``)."""

    name: str
    queue: str
    requested_at_ms: int
    paused: bool = False
    requested_by: str | None = None


# -- keys -------------------------------------------------------------------------------------


def definition_key(queue: str, name: str) -> bytes:
    return f"definition/{queue}/{name}".encode()


def state_key(queue: str, name: str) -> bytes:
    return f"state/{queue}/{name}".encode()


def pause_key(queue: str, name: str) -> bytes:
    return f"pause/{queue}/{name}".encode()


def trigger_key(queue: str, name: str, request: str) -> bytes:
    return f"trigger/{queue}/{name}/{request}".encode()


@dataclass(frozen=True, slots=True)
class Key:
    """A parsed record key of the schedules topic."""

    kind: str  # definition | state | pause | trigger
    queue: str
    name: str
    request: str | None = None


def parse_key(raw: bytes | None) -> Key | None:
    """The key's parts, or None for a key this version does not know (ignored, not fatal)."""
    if raw is None:
        return None
    parts = raw.decode(errors="replace").split("/")
    if len(parts) == 3 and parts[0] in ("definition", "state", "pause"):
        return Key(parts[0], parts[1], parts[2])
    if len(parts) == 4 and parts[0] == "trigger":
        return Key("trigger", parts[1], parts[2], parts[3])
    return None


# -- values -----------------------------------------------------------------------------------


def encode_definition(definition: Definition) -> bytes:
    return _DEFINITION.encode(asdict(definition))


def decode_definition(value: bytes) -> Definition:
    return Definition(**_decoded(_DEFINITION.decode(value)))


def encode_state(state: State) -> bytes:
    record = asdict(state)
    record["recent"] = [{**asdict(f), "lateness_ms": f.lateness_ms} for f in state.recent]
    return _STATE.encode(record)


def decode_state(value: bytes) -> State:
    record = _STATE.decode(value)
    recent = tuple(
        Fire(f["due_ms"], f["fired_at_ms"], f["task_id"], f["triggered"]) for f in record["recent"]
    )
    return State(**{**record, "recent": recent})


def encode_control(control: Control) -> bytes:
    return _CONTROL.encode(asdict(control))


def decode_control(value: bytes) -> Control:
    return Control(**_CONTROL.decode(value))


def _decoded(record: dict[str, Any]) -> dict[str, Any]:
    try:
        Definition(**record)
    except ConfigError as exc:
        raise DecodeError(f"invalid schedule definition: {exc}", reason="invalid_schedule") from exc
    return record


# -- fire task ids ----------------------------------------------------------------------------

_FIRE_ID = re.compile(r"schedule:(?P<queue>[^:]+):(?P<name>[A-Za-z0-9._-]+):(?P<when>[^:]+)")


def fire_task_id(queue: str, name: str, due: datetime) -> str:
    """The task id of the fire of schedule ``name`` due at ``due``: the same on every worker, so
    a fire written twice would still be one task on the status topic."""
    return f"schedule:{queue}:{name}:{due.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def trigger_task_id(queue: str, name: str, request: str) -> str:
    """The task id of a ``schedules trigger`` request: derived from the request's id."""
    return f"schedule:{queue}:{name}:trigger-{request}"


def schedule_of(task_id: str) -> str | None:
    """The schedule name in a fire's task id (None for any other task id)."""
    match = _FIRE_ID.fullmatch(task_id)
    return match["name"] if match else None


def due_of(task_id: str) -> datetime | None:
    """The due time in a cadence fire's task id (None for triggers and other ids)."""
    match = _FIRE_ID.fullmatch(task_id)
    if match is None:
        return None
    try:
        return datetime.strptime(match["when"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
