"""streamjobs.worker.supervisor's pure parts: backoff, giving up, the children's command lines."""

from __future__ import annotations

from datetime import timedelta

from streamjobs.worker.supervisor import (
    CrashHistory,
    RestartPolicy,
    child_commands,
    option_value,
    without_options,
)

POLICY = RestartPolicy(
    first_backoff=timedelta(seconds=1),
    max_backoff=timedelta(seconds=5),
    crash_limit=3,
    window=timedelta(seconds=60),
)


def test_backoff_doubles_per_crash_in_a_row_up_to_the_maximum() -> None:
    history = CrashHistory(POLICY)
    delays = [history.crashed(0, at).total_seconds() for at in (0.0, 1.0, 2.0, 3.0)]
    assert delays == [1.0, 2.0, 4.0, 5.0]


def test_a_child_that_ran_well_starts_its_backoff_over() -> None:
    history = CrashHistory(POLICY)
    history.crashed(0, 0.0)
    history.crashed(0, 1.0)
    history.ran_well(0)
    assert history.crashed(0, 100.0) == timedelta(seconds=1)


def test_each_slot_has_its_own_backoff() -> None:
    history = CrashHistory(POLICY)
    history.crashed(0, 0.0)
    assert history.crashed(1, 0.5) == timedelta(seconds=1)


def test_gives_up_only_after_more_crashes_than_the_limit_within_the_window() -> None:
    history = CrashHistory(POLICY)
    for at in (0.0, 10.0, 20.0):
        history.crashed(0, at)
    assert not history.give_up(20.0)
    history.crashed(1, 30.0)
    assert history.give_up(30.0)


def test_crashes_older_than_the_window_are_forgotten() -> None:
    history = CrashHistory(POLICY)
    for at in (0.0, 10.0, 20.0, 30.0):
        history.crashed(0, at)
    assert not history.give_up(75.0)  # the crashes at 0 and 10 are over a minute old


def test_children_get_the_command_without_processes_and_their_own_instance_ids() -> None:
    args = ["consume", "app:registry", "--processes", "3", "--instance-id=w", "--concurrency", "2"]
    base = without_options(args, ("--processes", "--instance-id"))
    assert base == ["consume", "app:registry", "--concurrency", "2"]
    commands = child_commands(base, 3, "w")
    assert [c[-1] for c in commands] == ["w-0", "w-1", "w-2"]
    assert child_commands(base, 2, None) == [base, base]


def test_each_child_gets_its_own_metrics_port_counting_up_from_the_given_one() -> None:
    args = ["consume", "app:registry", "--metrics-port", "9464", "--processes=2"]
    assert option_value(args, "--metrics-port") == "9464"
    base = without_options(args, ("--processes", "--metrics-port"))
    commands = child_commands(base, 2, None, 9464)
    assert [c[-2:] for c in commands] == [["--metrics-port", "9464"], ["--metrics-port", "9465"]]
