"""One pass of the leader: every fire owed now, across all schedules, as one transaction.

Owns :class:`Round`: for each schedule of the queue it collects the manual triggers, the cadence
fires its catch-up policy allows, skipped due times, and the state deletion of a removed schedule,
each with the state record that settles it. The leader writes ``records`` in one Kafka transaction
and only then calls ``settle`` to apply the new states in memory: if the transaction aborts,
nothing was fired and everything stays owed. Schedules due at the same second therefore cost one
transaction, not one each. Does not write to Kafka or decide leadership.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from streamjobs.errors import DecodeError, PayloadTooLarge
from streamjobs.scheduler.book import Entry
from streamjobs.scheduler.catchup import plan
from streamjobs.scheduler.fires import CannotFire, FireBuilder
from streamjobs.scheduler.state import (
    Definition,
    Fire,
    State,
    encode_state,
    fire_task_id,
    state_key,
    trigger_key,
    trigger_task_id,
)
from streamjobs.scheduler.timing import from_ms, to_ms
from streamjobs.scheduler.transaction import Out

_log = logging.getLogger(__name__)


@dataclass
class Round:
    """Fires and state changes of one pass, written together."""

    builder: FireBuilder
    owner: str
    schedules_topic: str
    records: list[Out] = field(default_factory=list)
    _states: dict[str, tuple[Entry, State | None]] = field(default_factory=dict)
    _triggers: list[tuple[Entry, str]] = field(default_factory=list)
    _fired: list[tuple[str, Fire]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.records

    def add(self, entry: Entry, now: datetime, now_ms: int) -> None:
        """Everything ``entry`` owes at ``now``."""
        self._add_triggers(entry, now_ms)
        self._add_cadence(entry, now)
        if entry.definition is None and entry.state is not None:
            # removed: delete the state too, so a schedule added again starts afresh
            self.records.append(Out(self.schedules_topic, self._state_key(entry), None))
            self._states[entry.name] = (entry, None)

    def settle(self) -> None:
        """After the transaction committed: hold the new states, forget the triggers."""
        for entry, state in self._states.values():
            entry.state = state
        for entry, request in self._triggers:
            entry.triggers.pop(request, None)
        for name, fire in self._fired:
            _log.info(
                "schedule %s fired task %s (due %s, %d ms late)",
                name,
                fire.task_id,
                from_ms(fire.due_ms).isoformat(),
                fire.lateness_ms,
            )

    def _state(self, entry: Entry, now_ms: int) -> State:
        pending = self._states.get(entry.name)
        if pending is not None and pending[1] is not None:
            return pending[1]
        return entry.state or State(entry.name, entry.queue, updated_at_ms=now_ms)

    def _state_key(self, entry: Entry) -> bytes:
        return state_key(entry.queue, entry.name)

    def _add_triggers(self, entry: Entry, now_ms: int) -> None:
        for request in sorted(entry.triggers, key=lambda r: entry.triggers[r].requested_at_ms):
            key = trigger_key(entry.queue, entry.name, request)
            self.records.append(Out(self.schedules_topic, key, None))  # done (or lapsed)
            self._triggers.append((entry, request))
            if entry.definition is not None:
                task_id = trigger_task_id(entry.queue, entry.name, request)
                self._fire(entry, entry.definition, Fire(now_ms, now_ms, task_id, True))

    def _add_cadence(self, entry: Entry, now: datetime) -> None:
        since = entry.owed_since_ms()
        definition = entry.definition
        if since is None or definition is None:
            return
        owed = plan(
            definition.cadence,
            definition.policy,
            since=from_ms(since),
            now=now,
            limit=definition.catch_up_limit,
        )
        if owed.settled is None:
            return
        if owed.skipped:
            _log.warning(
                "schedule %s: %d due time(s) skipped (catch_up=%s)",
                definition.name,
                owed.skipped,
                definition.catch_up,
            )
            state = self._state(entry, to_ms(now)).skipping(
                owed.skipped, to_ms(owed.settled), owner=self.owner, now_ms=to_ms(now)
            )
            self._set(entry, state)
        for due in owed.fire:
            fired_at = to_ms(datetime.now(due.tzinfo))
            task_id = fire_task_id(entry.queue, definition.name, due)
            self._fire(entry, definition, Fire(to_ms(due), fired_at, task_id))

    def _fire(self, entry: Entry, definition: Definition, fire: Fire) -> None:
        state = self._state(entry, fire.fired_at_ms)
        try:
            built = self.builder.build(definition, state, fire, owner=self.owner)
        except (CannotFire, PayloadTooLarge, DecodeError) as exc:
            # a definition that cannot make a task here: record why, and settle the due time
            # (a trigger lapses), or every pass would try and log it again
            _log.error("schedule %s: cannot fire %s: %s", definition.name, fire.task_id, exc)
            self._set(entry, state.failed(fire, f"{fire.task_id}: {exc}", owner=self.owner))
            return
        self.records.extend(built.records)
        self._set(entry, built.state)
        self._fired.append((definition.name, fire))

    def _set(self, entry: Entry, state: State) -> None:
        """Replace the entry's pending state record in this round (only the newest is written)."""
        key = self._state_key(entry)
        topic = self.schedules_topic
        self.records = [r for r in self.records if r.key != key or r.topic != topic]
        self.records.append(Out(self.schedules_topic, key, encode_state(state)))
        self._states[entry.name] = (entry, state)
