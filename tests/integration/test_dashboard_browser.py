"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium through
Debian's chromedriver (nothing downloaded), against a real broker, a real worker and
``streamjobs dashboard`` started as a process on a free loopback port and stopped by PID.

An operator is refused without the password, logs in, finds a failed task by its error text,
opens it and sees its attempts and traceback, re-drives its dead letter after a confirmation
and watches the task succeed. Screenshots of each page go to ``$STREAMJOBS_SCREENSHOTS``
(the README's come from ``STREAMJOBS_SCREENSHOTS=docs``), else to the test's temporary folder.
A schedule declared with the handlers is listed on the schedules page, triggered from there, and
its fire's task page names it. A ``streamjobs consume`` process is listed live on the workers
page from its heartbeats, then lost once it is killed. A dashboard of two queues served by one
worker lists both queues' tasks with their queue, a row per queue and both queues' dead letters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from streamjobs import Producer, Settings, Task, TaskRegistry, topics
from streamjobs.scheduler import Scheduler
from streamjobs.topics import queue_topics
from tests.integration.conftest import (
    REPO_ROOT,
    TEST_SETTINGS,
    ThreadWorker,
    WorkerProcesses,
    build_settings,
    worker_env,
)
from tests.support import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
PASSWORD = "open sesame"


class Invoice(Task):
    order: int
    amount_cents: int


def invoicing(calls: Counter[int]) -> TaskRegistry:
    """Every fifth order fails both attempts of its first run (then succeeds); others succeed."""
    registry = TaskRegistry()
    lock = threading.Lock()

    @registry.handler(Invoice, max_attempts=2)
    def invoice(task: Invoice) -> dict[str, int]:
        with lock:
            calls[task.order] += 1
            failing = task.order % 5 == 0 and calls[task.order] <= 2
        if failing:
            raise ConnectionError(f"payment gateway down for order {task.order}")
        return {"invoiced": task.order, "cents": task.amount_cents}

    # the top of every hour, so it never fires by itself during the test: it is triggered
    registry.schedule(
        "hourly-invoice",
        every=timedelta(hours=1),
        catch_up="skip",
        task=Invoice(order=1001, amount_cents=5),
    )
    return registry


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture
def dashboard(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """``streamjobs dashboard`` for the test's queue on a free port; its base URL."""
    with _dashboard_process(settings, tmp_path) as base:
        yield base


@contextlib.contextmanager
def _dashboard_process(settings: Settings, tmp_path: Path, *args: str) -> Iterator[str]:
    """``streamjobs dashboard ARGS`` on a free port, stopped by its PID; its base URL."""
    port = _free_port()
    env = {
        **worker_env(settings),
        "STREAMJOBS_DASHBOARD_PASSWORD": PASSWORD,
        "STREAMJOBS_JAEGER_QUERY_URL": "http://127.0.0.1:9",  # no Jaeger: the page says so
    }
    log = (tmp_path / "dashboard.log").open("wb")
    command = [
        sys.executable, "-m", "streamjobs.cli", "dashboard",
        "--bootstrap-servers", settings.bootstrap_servers,
        "--topic-prefix", settings.topic_prefix,
        "--port", str(port), "--index", str(tmp_path / "index.sqlite3"), *args,
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: proc.poll() is not None or _answers(f"{base}/login"),
            60,
            message="the dashboard to answer",
        )
        assert proc.poll() is None, (tmp_path / "dashboard.log").read_text()
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("needs Debian's chromium and chromium-driver: run `make system-deps` as root")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1280,1200")
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(tmp_path: Path) -> Callable[[WebDriver, str], None]:
    folder = Path(os.environ.get("STREAMJOBS_SCREENSHOTS") or tmp_path)
    folder = folder if folder.is_absolute() else REPO_ROOT / folder
    folder.mkdir(parents=True, exist_ok=True)

    def shoot(driver: WebDriver, name: str) -> None:
        driver.save_screenshot(str(folder / f"dashboard-{name}.png"))

    return shoot


def _click_to_next_page(driver: WebDriver, element: WebElement) -> None:
    """Click a link or submit button and wait (with a deadline) until the next page replaced
    this one: a click returns once the browser took it, not once the new page is there."""
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(driver, 60).until(staleness_of(page))


def _text(driver: WebDriver, css: str) -> str:
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def _reload_until(driver: WebDriver, url: str, css: str, wanted: str, timeout: float) -> str:
    def seen() -> str:
        driver.get(url)
        text = _text(driver, css)
        return text if wanted in text else ""

    return wait_for(seen, timeout, interval=0.5, message=f"{wanted!r} in {css} at {url}")


@pytest.fixture
def scheduler() -> Iterator[list[Scheduler]]:
    """Schedulers started by the test, stopped at teardown."""
    started: list[Scheduler] = []
    yield started
    for instance in started:
        instance.stop()


def test_an_operator_finds_a_failed_task_by_its_error_and_redrives_it_to_success(
    settings: Settings,
    worker: Callable[..., ThreadWorker],
    scheduler: list[Scheduler],
    worker_process: WorkerProcesses,
    dashboard: str,
    browser: WebDriver,
    shots: Callable[[WebDriver, str], None],
) -> None:
    registry = invoicing(Counter())
    worker(registry)
    with Producer(settings) as producer:
        handles = producer.submit_many(
            [Invoice(order=n, amount_cents=100 * n + 99) for n in range(1, 31)]
        )
    failed_id = handles[9].task_id  # order 10

    # no password, no dashboard
    browser.get(f"{dashboard}/tasks")
    assert browser.current_url == f"{dashboard}/login"
    browser.find_element(By.ID, "password").send_keys("guess")
    _click_to_next_page(browser, browser.find_element(By.ID, "login"))
    assert _text(browser, "#login-error") == "wrong password"
    shots(browser, "login")
    browser.find_element(By.ID, "name").send_keys("ana")
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    _click_to_next_page(browser, browser.find_element(By.ID, "login"))
    assert browser.current_url == f"{dashboard}/"

    # every outcome indexed (the dashboard follows the topics every second)
    _reload_until(browser, f"{dashboard}/", "#states", "dead_lettered 6", 90)
    _reload_until(browser, f"{dashboard}/", "#states", "succeeded 24", 30)
    main_topic = queue_topics(settings).main
    _reload_until(browser, f"{dashboard}/", "#lag", f"{main_topic} 2 ", 30)  # re-read every 5 s
    scheduler.append(Scheduler(settings, registry, owner="browser-test"))
    scheduler[0].start()  # only now: its fires are not among the counts above
    shots(browser, "overview")

    # the failed task, found by its error text
    browser.get(f"{dashboard}/tasks")
    browser.find_element(By.ID, "text").send_keys("gateway down for order 10")
    _click_to_next_page(browser, browser.find_element(By.ID, "search"))
    links = browser.find_elements(By.CSS_SELECTOR, "#results a.task-link")
    assert [a.text for a in links] == [failed_id]
    shots(browser, "tasks")
    _click_to_next_page(browser, links[0])
    assert _text(browser, "#task-state") == "dead_lettered"
    attempts = browser.find_elements(By.CSS_SELECTOR, "#attempts tr.attempt")
    assert [a.find_elements(By.TAG_NAME, "td")[1].text for a in attempts] == ["1", "2"]
    assert "retry_scheduled" in attempts[0].text
    assert "dead_lettered" in attempts[1].text
    tracebacks = browser.find_elements(By.CSS_SELECTOR, "#attempts details.traceback")
    tracebacks[-1].find_element(By.TAG_NAME, "summary").click()
    shown = tracebacks[-1].find_element(By.TAG_NAME, "pre").text
    assert "Traceback (most recent call last)" in shown
    assert "ConnectionError: payment gateway down for order 10" in shown
    browser.switch_to.frame(browser.find_element(By.CSS_SELECTOR, "iframe[title=arguments]"))
    wait_for(lambda: "amount_cents" in _text(browser, "#args"), 30, message="arguments")
    browser.switch_to.default_content()
    shots(browser, "task")

    # its dead letter, re-driven after a confirmation
    browser.get(f"{dashboard}/dead-letters")
    rows = [
        r for r in browser.find_elements(By.CSS_SELECTOR, "#dead-letters tr") if failed_id in r.text
    ]
    assert len(rows) == 1
    rows[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    shots(browser, "dead-letters")
    _click_to_next_page(browser, browser.find_element(By.ID, "redrive-selected"))
    refs = browser.find_elements(By.CSS_SELECTOR, "#refs li")
    assert len(refs) == 1, _text(browser, "main")
    _click_to_next_page(browser, browser.find_element(By.ID, "confirm-redrive"))
    assert _text(browser, "#redrive-result").startswith("1 redriven, 0 skipped, 0 failed")

    _reload_until(browser, f"{dashboard}/tasks/{failed_id}", "#task-state", "succeeded", 60)
    assert "generation 1" in _text(browser, "main")
    shots(browser, "task-redriven")

    # a schedule, triggered from its page; the fired task names it
    _reload_until(browser, f"{dashboard}/schedules", "#schedules", "hourly-invoice", 60)
    _click_to_next_page(browser, browser.find_element(By.ID, "trigger-hourly-invoice"))
    fired = _text(browser, "#schedule-done").rsplit(" ", 1)[-1]
    assert fired.startswith("schedule:default:hourly-invoice:trigger-")
    _reload_until(browser, f"{dashboard}/tasks/{fired}", "#task-state", "succeeded", 90)
    assert _text(browser, "#schedule") == "hourly-invoice"
    _reload_until(browser, f"{dashboard}/schedules", "#schedules", "triggered", 30)
    shots(browser, "schedules")

    # a `streamjobs consume` process (of another queue, so it takes none of these tasks) is
    # listed live from its heartbeats, and lost once killed (no report for three intervals)
    watched = settings.model_copy(
        update={"queue": "watched", "heartbeat_interval": timedelta(seconds=1)}
    )
    topics.ensure(watched)
    process = worker_process.start(
        watched, "tests.integration.observed_tasks:registry", "--queue", "watched"
    )
    row = "#workers tr.worker"
    _reload_until(browser, f"{dashboard}/workers", row, "watched", 60)
    assert _text(browser, row).startswith("live"), _text(browser, "main")
    shots(browser, "workers")
    process.kill()  # SIGKILL: no goodbye tombstone
    process.wait(10)
    _reload_until(browser, f"{dashboard}/workers", "#workers tr.lost", "watched", 30)
    shots(browser, "workers-lost")


def test_a_dashboard_of_two_queues_lists_both_queues_tasks_with_their_queue(
    kafka_bootstrap: str,
    unique_prefix: str,
    worker: Callable[..., ThreadWorker],
    tmp_path: Path,
    browser: WebDriver,
    shots: Callable[[WebDriver, str], None],
) -> None:
    per_queue = {
        q: build_settings(kafka_bootstrap, unique_prefix, queue=q) for q in ("critical", "low")
    }
    served = Settings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=unique_prefix,
        queues=["critical", "low"],
        **TEST_SETTINGS,
    )
    registry = TaskRegistry()

    @registry.handler(Invoice, max_attempts=1)
    def invoice(task: Invoice) -> int:
        if task.order % 5 == 0:
            raise ConnectionError(f"payment gateway down for order {task.order}")
        return task.order

    ids: dict[str, list[str]] = {}
    for queue, orders in (("critical", range(1, 6)), ("low", range(6, 16))):
        with Producer(per_queue[queue]) as producer:
            handles = producer.submit_many([Invoice(order=n, amount_cents=n) for n in orders])
        ids[queue] = [h.task_id for h in handles]
    worker(registry, served)
    with _dashboard_process(
        per_queue["critical"], tmp_path, "--queue", "critical", "--queue", "low"
    ) as base:
        browser.get(f"{base}/login")
        browser.find_element(By.ID, "name").send_keys("ana")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        _click_to_next_page(browser, browser.find_element(By.ID, "login"))

        # a row per queue (succeeded, dead_lettered, dead letters, ...): critical 4, 1 and 1,
        # low 8, 2 and 2
        _reload_until(browser, f"{base}/", "#queue-low", "low 8 2 2 ", 90)
        assert _text(browser, "#queue-critical").startswith("critical 4 1 1 ")
        assert "Queues critical, low" in _text(browser, "h1")
        _reload_until(browser, f"{base}/", "#lag", f"low {unique_prefix}.low ", 30)
        assert f"critical {unique_prefix}.critical " in _text(browser, "#lag")
        shots(browser, "two-queues")

        # every task, each with its queue; then only low's
        browser.get(f"{base}/tasks")
        rows = browser.find_elements(By.CSS_SELECTOR, "#results tr")[1:]
        listed = {
            r.find_element(By.CSS_SELECTOR, "a.task-link").text: r.find_element(
                By.CSS_SELECTOR, "td.queue"
            ).text
            for r in rows
        }
        assert listed == {t: q for q, found in ids.items() for t in found}
        browser.get(f"{base}/tasks?queue=low")
        links = browser.find_elements(By.CSS_SELECTOR, "#results a.task-link")
        assert sorted(a.text for a in links) == sorted(ids["low"])

        # both queues' dead letters, each under its queue
        browser.get(f"{base}/dead-letters")
        cells = browser.find_elements(By.CSS_SELECTOR, "#dead-letters td.queue")
        assert sorted(c.text for c in cells) == ["critical", "low", "low"]
