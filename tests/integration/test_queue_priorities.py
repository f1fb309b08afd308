"""Several queues served by one worker, against a real broker: strict order lets a burst in a
higher queue start ahead of a lower queue's backlog; weighted order shares the worker in
proportion to the weights while every queue has a backlog; a retry keeps its queue."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamjobs import Producer, Settings, Task, TaskRegistry
from tests.integration.conftest import (
    REPO_ROOT,
    TEST_SETTINGS,
    ThreadWorker,
    build_settings,
    read_topic,
    state_of,
    worker_env,
)
from tests.integration.test_readme import readme_example
from tests.support import wait_for

pytestmark = pytest.mark.integration


class Work(Task):
    queue: str
    seq: int
    seconds: float = 0.0


class Flaky(Task):
    name: str


class Started:
    """The order in which the worker started tasks, as (queue, seq)."""

    def __init__(self) -> None:
        self.order: list[tuple[str, int]] = []
        self._lock = threading.Lock()

    def work(self, task: Work) -> None:
        with self._lock:
            self.order.append((task.queue, task.seq))
        if task.seconds:
            time.sleep(task.seconds)  # the handler's own work, not synchronisation

    def count(self) -> int:
        with self._lock:
            return len(self.order)


@pytest.fixture
def queue_settings(
    kafka_bootstrap: str, unique_prefix: str
) -> Callable[..., tuple[Settings, dict[str, Settings]]]:
    """The worker's settings for ``queues`` (each queue's topics ensured), and each queue's own
    settings (for its producer)."""

    def make(queues: list[str], **overrides: Any) -> tuple[Settings, dict[str, Settings]]:
        names = [spec.partition("=")[0] for spec in queues]
        per_queue = {
            n: build_settings(kafka_bootstrap, unique_prefix, queue=n, **overrides) for n in names
        }
        served = Settings(
            bootstrap_servers=kafka_bootstrap,
            topic_prefix=unique_prefix,
            queues=queues,
            **{**TEST_SETTINGS, **overrides},
        )
        return served, per_queue

    return make


@pytest.fixture
def producers() -> Iterator[Callable[[Settings], Producer]]:
    opened: list[Producer] = []

    def open_(settings: Settings) -> Producer:
        opened.append(Producer(settings))
        return opened[-1]

    yield open_
    for producer in opened:
        producer.close()


def _submit(producer: Producer, queue: str, count: int, seconds: float = 0.0) -> None:
    for start in range(0, count, 500):
        seqs = range(start, min(count, start + 500))
        producer.submit_many(Work(queue=queue, seq=s, seconds=seconds) for s in seqs)


def test_strict_a_burst_in_critical_starts_ahead_of_every_remaining_low_task(
    queue_settings: Callable[..., tuple[Settings, dict[str, Settings]]],
    producers: Callable[[Settings], Producer],
    worker: Callable[..., ThreadWorker],
) -> None:
    served, per_queue = queue_settings(
        ["critical", "low"], concurrency=2, max_in_flight=40, partitions=1
    )
    assert served.effective_queue_order == "strict"
    started = Started()
    registry = TaskRegistry()
    registry.handler(Work)(started.work)
    _submit(producers(per_queue["low"]), "low", 800, seconds=0.01)
    worker(registry, served)
    wait_for(lambda: started.count() >= 20, 60, message="low tasks started")

    _submit(producers(per_queue["critical"]), "critical", 40, seconds=0.02)
    wait_for(lambda: started.count() == 840, 120, message="every task started")

    order = [queue for queue, _ in started.order]
    first = order.index("critical")
    last = len(order) - 1 - order[::-1].index("critical")
    low_among = order[first:last].count("low")
    remaining_low = order[last:].count("low")
    # a thread finishing a low task while the last critical one is being taken may start the
    # next low one a moment earlier: at most concurrency - 1 of them
    assert low_among <= 1, f"{low_among} low tasks started during the critical burst"
    assert remaining_low > 100, "the burst came after the low backlog was already drained"


def test_weighted_6_3_1_shares_the_first_started_tasks_in_proportion(
    queue_settings: Callable[..., tuple[Settings, dict[str, Settings]]],
    producers: Callable[[Settings], Producer],
    worker: Callable[..., ThreadWorker],
) -> None:
    served, per_queue = queue_settings(
        ["critical=6", "default=3", "low=1"], concurrency=4, max_in_flight=100
    )
    assert served.effective_queue_order == "weighted"
    backlog = {"critical": 2400, "default": 1200, "low": 400}
    for name, count in backlog.items():
        _submit(producers(per_queue[name]), name, count)
    started = Started()
    registry = TaskRegistry()
    registry.handler(Work)(started.work)
    worker(registry, served)
    first = 3000  # every queue still has a backlog after this many (1800 of 2400 critical)
    wait_for(lambda: started.count() >= first, 180, message=f"{first} tasks started")

    shares = Counter(queue for queue, _ in started.order[:first])
    for name, weight in (("critical", 6), ("default", 3), ("low", 1)):
        assert shares[name] / first == pytest.approx(weight / 10, rel=0.1), dict(shares)
    wait_for(lambda: started.count() == sum(backlog.values()), 120, message="all started")


def test_a_retry_goes_to_its_own_queues_tier_and_dead_letters_to_its_own_queue(
    queue_settings: Callable[..., tuple[Settings, dict[str, Settings]]],
    producers: Callable[[Settings], Producer],
    worker: Callable[..., ThreadWorker],
) -> None:
    served, per_queue = queue_settings(["critical", "low"], max_attempts=2)
    runs: Counter[str] = Counter()
    registry = TaskRegistry()

    @registry.handler(Flaky)
    def flaky(task: Flaky) -> None:
        runs[task.name] += 1
        raise RuntimeError("always")

    worker(registry, served)
    handle = producers(per_queue["low"]).submit(Flaky(name="x"))
    low = per_queue["low"]
    wait_for(lambda: read_topic(low, f"{low.topic_prefix}.low.dlq", timeout=2), 60, message="dlq")
    assert runs["x"] == 2
    retries = read_topic(low, f"{low.topic_prefix}.low.retry.300ms", timeout=2)
    assert len(retries) == 1
    assert state_of(low, handle.task_id) == "dead_lettered"
    critical = per_queue["critical"]
    assert not read_topic(critical, f"{critical.topic_prefix}.critical.dlq", timeout=2)
    assert not read_topic(critical, f"{critical.topic_prefix}.critical.retry.300ms", timeout=2)


def _readme_queue_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Queues and priorities", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None, "the README's queues section has no bash block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_queue_commands_run_as_written(
    kafka_bootstrap: str, unique_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "tasks.py").write_text(readme_example("# tasks.py"))
    settings = Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique_prefix)
    env = {
        **worker_env(settings),
        "STREAMJOBS_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "STREAMJOBS_TOPIC_PREFIX": unique_prefix,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
    }
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    ensure, *consumes, inspect = _readme_queue_commands()
    done = subprocess.run(
        ["bash", "-c", ensure], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    banners = []
    for line in consumes:
        log = tmp_path / "worker.log"
        with log.open("wb") as out:
            # one simple command: bash execs it, so the signal below reaches the worker
            worker = subprocess.Popen(["bash", "-c", line], cwd=tmp_path, env=env,
                                      stdout=out, stderr=out)  # fmt: skip
            try:
                banner = wait_for(
                    lambda log=log: re.search(r"worker \S+: (queues .*?), group", log.read_text()),
                    60,
                    message=f"the banner of {line}",
                )
                banners.append(banner.group(1))
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
    assert banners == [
        "queues critical, default, low (strict)",
        "queues critical=6, default=3, low=1 (weighted)",
        "queues critical=6, default=3, low=1 (weighted)",
    ]
    done = subprocess.run(
        ["bash", "-c", inspect], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for queue in ("critical", "default", "low"):
        assert f"queue {queue} · group {unique_prefix}.critical.workers" in done.stdout
