"""AsyncProducer without a broker: the loop keeps running while a submit waits, an unconfirmed
submit raises SubmitError, and using it outside ``async with`` is a clear error."""

from __future__ import annotations

import asyncio
import socket
import threading
from datetime import timedelta

import pytest

from streamjobs import AsyncProducer, Settings, StreamJobsError, SubmitError, Task
from streamjobs.aio import _Wakeups


class Ping(Task):
    n: int


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_event_loop_keeps_running_while_an_unconfirmable_submit_waits_then_it_raises() -> None:
    settings = Settings(bootstrap_servers=f"127.0.0.1:{_closed_port()}", topic_prefix="t0")

    async def main() -> tuple[int, BaseException | None]:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        error: BaseException | None = None
        async with AsyncProducer(settings, timeout=timedelta(seconds=1)) as producer:
            try:
                await producer.submit(Ping(n=1))
            except SubmitError as exc:
                error = exc
        stop.set()
        await ticking
        return ticks, error

    ticks, error = asyncio.run(main())
    assert isinstance(error, SubmitError)
    assert ticks >= 20  # about a second of 10 ms ticks while the submit waited


def test_submit_outside_async_with_says_how_to_start_the_producer() -> None:
    producer = AsyncProducer(Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="t0"))

    with pytest.raises(StreamJobsError, match="async with"):
        asyncio.run(producer.submit(Ping(n=1)))


def test_a_burst_of_outcomes_from_the_poll_thread_settles_every_future_with_one_wake_up() -> None:

    async def main() -> tuple[list[object], int]:
        loop = asyncio.get_running_loop()
        wakeups = _Wakeups(loop)
        scheduled = 0
        threadsafe = loop.call_soon_threadsafe

        def counting(callback: object, *args: object) -> asyncio.Handle:
            nonlocal scheduled
            scheduled += 1
            return threadsafe(callback, *args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        futures = [loop.create_future() for _ in range(50)]
        dones = [wakeups.deliver_to(future) for future in futures]

        # the loop is busy in this coroutine while the whole burst arrives from another thread
        def burst() -> None:
            for i, done in enumerate(dones):
                done(SubmitError(str(i)))

        thread = threading.Thread(target=burst)
        thread.start()
        thread.join()
        results = await asyncio.gather(*futures)
        return results, scheduled

    results, scheduled = asyncio.run(main())
    assert [str(r) for r in results] == [str(i) for i in range(50)]
    assert scheduled == 1


def test_the_outcome_of_a_cancelled_submit_is_dropped_and_later_ones_still_arrive() -> None:

    async def main() -> object:
        loop = asyncio.get_running_loop()
        wakeups = _Wakeups(loop)
        cancelled, later = loop.create_future(), loop.create_future()
        cancelled.cancel()
        wakeups.deliver_to(cancelled)(SubmitError("late"))
        await asyncio.sleep(0)  # its wake-up runs and finds the future cancelled
        await asyncio.sleep(0)
        wakeups.deliver_to(later)(SubmitError("next"))
        return await asyncio.wait_for(later, 5)

    assert str(asyncio.run(main())) == "next"
