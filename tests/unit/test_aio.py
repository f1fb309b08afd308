"""AsyncProducer without a broker: the loop keeps running while a submit waits, an unconfirmed
submit raises SubmitError, and using it outside ``async with`` is a clear error."""

from __future__ import annotations

import asyncio
import socket
from datetime import timedelta

import pytest

from streamjobs import AsyncProducer, Settings, StreamJobsError, SubmitError, Task


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
