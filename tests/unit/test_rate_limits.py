"""Rate limits without a broker: parsing, the token bucket, each worker's share and the gate
that holds tasks over the limit (streamjobs.rates, streamjobs.worker.ratelimit)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from typer.testing import CliRunner

from streamjobs import Settings, Task, TaskRegistry
from streamjobs.cli import app
from streamjobs.cli.options import build_settings
from streamjobs.errors import ConfigError
from streamjobs.rates import Rate, parse_rate
from streamjobs.worker.ratelimit import BURST_S, Decision, RateGate, TokenBucket, share

TICK = 0.02  # a poll turn


class CallPartnerApi(Task):
    n: int


# -- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("20/s", 20.0), ("100/m", 100 / 60), ("500/h", 500 / 3600), (" 2.5 / s ", 2.5)],
)
def test_rates_are_written_as_a_count_per_second_minute_or_hour(
    text: str, per_second: float
) -> None:
    assert parse_rate(text).per_second == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["20", "20/d", "0/s", "-1/s", "x/s", "", "20/s/s", "1e3/s"])
def test_a_rate_that_is_not_a_positive_count_per_s_m_or_h_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="rate limit"):
        parse_rate(text)


def test_a_rate_prints_as_written() -> None:
    assert str(parse_rate("100/m")) == "100/m"
    assert str(parse_rate("2.5/s")) == "2.5/s"


def test_a_bad_rate_limit_is_refused_when_the_handler_is_registered() -> None:
    registry = TaskRegistry()
    with pytest.raises(ConfigError, match="'100 per minute'"):
        registry.handler(CallPartnerApi, rate_limit="100 per minute")
    assert "CallPartnerApi" not in registry


def test_a_handlers_rate_limit_is_kept_with_it() -> None:
    registry = TaskRegistry()

    @registry.handler(CallPartnerApi, rate_limit="100/m")
    def call(task: CallPartnerApi) -> None:
        del task

    assert registry.get("CallPartnerApi").rate_limit == Rate(100, timedelta(minutes=1))


def test_the_queue_rate_limit_setting_is_parsed_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().queue_rate is None
    assert Settings(queue_rate_limit="50/s").queue_rate == Rate(50, timedelta(seconds=1))
    monkeypatch.setenv("STREAMJOBS_QUEUE_RATE_LIMIT", "10/m")
    assert Settings().queue_rate == Rate(10, timedelta(minutes=1))
    with pytest.raises(ConfigError):
        Settings(queue_rate_limit="50/x")


# -- the token bucket ------------------------------------------------------------------------


def test_a_bucket_starts_empty_and_earns_one_token_per_period_of_its_rate() -> None:
    bucket = TokenBucket(4.0, now=0.0)
    assert not bucket.ready(0.0), "a (re)started worker must not begin with a burst"
    assert not bucket.ready(0.24)
    assert bucket.ready(0.25)
    bucket.take()
    assert not bucket.ready(0.26)


def test_a_bucket_saves_at_most_half_a_second_of_its_rate_and_at_least_one_token() -> None:
    bucket = TokenBucket(100.0, now=0.0)
    assert bucket.ready(60.0)
    assert bucket.tokens == pytest.approx(100.0 * BURST_S)
    slow = TokenBucket(0.1, now=0.0)
    assert slow.ready(3600.0)
    assert slow.tokens == pytest.approx(1.0)


def test_a_new_rate_keeps_the_tokens_earned_at_the_old_one() -> None:
    bucket = TokenBucket(2.0, now=0.0)
    bucket.set_rate(10.0, now=0.4)  # 0.8 token earned at 2/s
    assert not bucket.ready(0.41)
    assert bucket.ready(0.42)  # the last 0.2 token at 10/s takes 20 ms


def test_a_bucket_at_rate_zero_never_has_a_token() -> None:
    bucket = TokenBucket(0.0, now=0.0)
    assert not bucket.ready(1e9)


# -- each worker's share ---------------------------------------------------------------------


def test_a_workers_share_is_the_limit_times_the_fraction_of_partitions_it_owns() -> None:
    limit = parse_rate("20/s")
    assert share(limit, 2, 6) == pytest.approx(20 / 3)
    assert share(limit, 6, 6) == pytest.approx(20.0)
    assert share(limit, 0, 6) == 0.0
    assert share(limit, 3, 0) == 0.0


def test_shares_add_up_to_the_limit_however_the_partitions_are_split() -> None:
    limit = parse_rate("100/m")
    for split in ([6], [3, 3], [2, 2, 2], [1, 2, 3], [1, 1, 1, 1, 1, 1], [5, 1]):
        assert sum(share(limit, owned, 6) for owned in split) == pytest.approx(limit.per_second)


# -- the gate ----------------------------------------------------------------------------------


def _gate(
    types: dict[str, str] | None = None, queue: str | None = None, max_held: int = 1000
) -> RateGate[str]:
    rates = {name: parse_rate(text) for name, text in (types or {}).items()}
    gate: RateGate[str] = RateGate(
        rates, None if queue is None else parse_rate(queue), max_held=max_held, now=0.0
    )
    gate.share(1, 1, now=0.0)
    return gate


def _never_gone(item: str) -> bool:
    del item
    return False


def _run_backlog(gates: list[RateGate[str]], until: float, start: float = 0.0) -> list[float]:
    """Each gate has an endless backlog of limited tasks (one new key per task); poll turns
    every TICK. Returns the start times of every task, all gates together."""
    starts: list[float] = []
    now = start
    count = 0
    while now < until:
        for gate in gates:
            started, _ = gate.release(now, _never_gone)
            starts.extend(now for _ in started)
            while gate.held < 50:  # keep reading: each task starts at once or is held
                count += 1
                decision = gate.decide("Limited", f"k{count}", now)
                if decision is Decision.RUN:
                    starts.append(now)
                else:
                    gate.hold("Limited", f"k{count}", f"t{count}")
        now += TICK
    return starts


def test_a_backlog_of_a_limited_type_starts_at_the_limit_in_every_second() -> None:
    gate = _gate({"Limited": "20/s"})
    starts = _run_backlog([gate], until=10.0)
    for second in range(10):
        in_second = sum(1 for t in starts if second <= t < second + 1)
        assert 19 <= in_second <= 21, (second, in_second)


def test_three_workers_sharing_a_limit_start_at_most_the_limit_together() -> None:
    limit = "20/s"
    gates = [_gate({"Limited": limit}) for _ in range(3)]
    for gate in gates:
        gate.share(2, 6, now=0.0)
    starts = _run_backlog(gates, until=10.0)
    assert 195 <= len(starts) <= 200
    # one worker leaves: its partitions (and its share) move to the other two
    for gate in gates[:2]:
        gate.share(3, 6, now=10.0)
    later = _run_backlog(gates[:2], start=10.0, until=20.0)
    assert 195 <= len(later) <= 201


def test_while_a_partition_moves_nobody_owns_it_and_the_group_stays_under_the_limit() -> None:
    gates = [_gate({"Limited": "30/s"}) for _ in range(3)]
    for gate in gates:
        gate.share(2, 6, now=0.0)
    gates[0].share(1, 6, now=0.0)  # revoked from the first worker, not assigned yet
    starts = _run_backlog(gates, until=10.0)
    assert len(starts) <= 250


def test_other_task_types_run_at_once_while_a_limited_one_waits() -> None:
    gate = _gate({"Limited": "1/s"})
    assert gate.decide("Limited", "a", 0.0) is Decision.HOLD
    gate.hold("Limited", "a", "limited-a")
    for n in range(100):
        assert gate.decide("Other", f"b{n}", 0.0) is Decision.RUN


def test_a_later_task_of_a_held_key_waits_behind_it_and_follows_it_in_order() -> None:
    gate = _gate({"Limited": "1/s"})
    assert gate.decide("Limited", "k", 0.0) is Decision.HOLD
    gate.hold("Limited", "k", "first")
    assert gate.decide("Other", "k", 0.0) is Decision.HOLD, "it would overtake its key"
    gate.hold("Other", "k", "second")
    assert gate.release(0.5, _never_gone) == ([], [])
    assert gate.release(1.0, _never_gone) == (["first", "second"], [])
    assert gate.decide("Other", "k", 1.0) is Decision.RUN


def test_held_tasks_start_in_arrival_order_as_tokens_come() -> None:
    gate = _gate({"Limited": "10/s"})
    for n in range(5):
        assert gate.decide("Limited", f"k{n}", 0.0) is Decision.HOLD
        gate.hold("Limited", f"k{n}", f"t{n}")
    released: list[str] = []
    now = 0.0
    while len(released) < 5:
        now += TICK
        released += gate.release(now, _never_gone)[0]
    assert released == ["t0", "t1", "t2", "t3", "t4"]
    assert now == pytest.approx(0.5, abs=TICK)


def test_past_max_held_a_task_over_the_limit_is_left_unread() -> None:
    gate = _gate({"Limited": "1/s"}, max_held=2)
    for n in range(2):
        assert gate.decide("Limited", f"k{n}", 0.0) is Decision.HOLD
        gate.hold("Limited", f"k{n}", f"t{n}")
    assert gate.decide("Limited", "k9", 0.0) is Decision.FULL
    assert gate.decide("Other", "k0", 0.0) is Decision.FULL, "it must not overtake its key"
    assert gate.decide("Other", "k5", 0.0) is Decision.RUN
    assert not gate.room_again
    gate.release(1.0, _never_gone)
    assert gate.room_again, "resume once the hold has emptied to half"


def test_tasks_of_a_partition_given_up_are_dropped_unstarted() -> None:
    gate = _gate({"Limited": "1/s"})
    for n in range(3):
        gate.decide("Limited", f"k{n}", 0.0)
        gate.hold("Limited", f"k{n}", f"t{n}")
    gate.share(0, 1, now=0.1)  # the partition was revoked
    started, dropped = gate.release(0.1, lambda item: item != "t1")
    assert (started, sorted(dropped)) == ([], ["t0", "t2"])
    assert gate.held == 1


def test_the_queue_limit_counts_every_task_type_and_a_type_limit_applies_too() -> None:
    gate = _gate({"Limited": "100/s"}, queue="10/s", max_held=100)
    starts = 0
    now = 0.0
    for n in range(2000):
        now = n * 0.005  # 200 tasks a second, half of them Limited
        task = "Limited" if n % 2 else "Other"
        started, _ = gate.release(now, _never_gone)
        starts += len(started)
        if gate.decide(task, f"k{n}", now) is Decision.RUN:
            starts += 1
        elif gate.held < gate.max_held:
            gate.hold(task, f"k{n}", f"t{n}")
    assert 95 <= starts <= 100, "10/s over 10 s, whatever the type"
    assert gate.rate(None) == pytest.approx(10.0)


def test_without_limits_the_gate_is_inactive_and_runs_everything() -> None:
    gate = _gate()
    assert not gate.active
    assert gate.decide("Any", "k", 0.0) is Decision.RUN


def test_a_held_task_found_given_up_takes_no_token_and_is_dropped_on_the_next_turn() -> None:
    gate = _gate({"Limited": "10/s"})
    for n in range(2):
        gate.decide("Limited", f"k{n}", 0.0)
        gate.hold("Limited", f"k{n}", f"t{n}")
    assert gate.release(0.05, _never_gone) == ([], [])  # no token yet
    assert gate.release(0.1, lambda item: item == "t0") == (["t1"], [])
    assert gate.release(0.1, lambda item: item == "t0") == ([], ["t0"])
    assert gate.held == 0


def test_consume_takes_the_queue_limit_as_rate_limit_and_refuses_a_bad_one() -> None:
    shown = CliRunner().invoke(app, ["consume", "--help"], env={"COLUMNS": "200"})
    assert "--rate-limit" in shown.stdout
    assert build_settings(queue_rate_limit="50/s").queue_rate == Rate(50, timedelta(seconds=1))
    with pytest.raises(ConfigError, match="not a rate limit"):
        build_settings(queue_rate_limit="50 per second")
