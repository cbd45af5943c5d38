"""The Python face under concurrency: many threads on one blocking client, and the asyncio
nodes of `matchtracker.aio` (gather, cancellation, timeouts, context managers)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from matchtracker import Client, MatchTrackerError, RefusedError, Server, Tracker, aio

SHORT = 0.2


async def open_requests(tracker: aio.Tracker, want: int) -> None:
    """Waits until the tracker has exactly `want` requests open (it has no event for it)."""
    for _ in range(1000):
        if tracker.stats()["open_requests"] == want:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"open requests stayed at {tracker.stats()['open_requests']}, not {want}")


def test_calls_from_many_threads_share_one_client() -> None:
    with Tracker(timeout=SHORT) as tracker, Server("S1", tracker.address, number=4), Server(
        "S2", tracker.address, number=7
    ), Client("C1", tracker.address) as client:
        numbers = [4, 7, 1] * 67  # 201 calls
        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(client.find_match, numbers))
        assert answers == [{4: ["S1"], 7: ["S2"], 1: []}[n] for n in numbers]
        # Every request was on the one connection.
        assert tracker.stats()["requests"] == len(numbers) and tracker.stats()["clients"] == 1


def test_close_from_another_thread_ends_every_waiting_call_at_once() -> None:
    with Tracker(timeout=30) as tracker, Server("S1", tracker.address, number=4):
        client = Client("C1", tracker.address)
        failures: list[BaseException] = []

        def ask() -> None:
            try:
                client.find_match(5)  # S1 does not hold 5: the request waits for its deadline
            except MatchTrackerError as e:
                failures.append(e)

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        # Wait on the tracker seeing all eight, not on time.
        tracker.wait_for_nodes(1, 1)
        for _ in range(1000):
            if tracker.stats()["open_requests"] == 8:
                break
            threading.Event().wait(0.005)
        assert tracker.stats()["open_requests"] == 8
        client.close()  # returns at once: the deadline is 30 s away
        for thread in threads:
            thread.join(timeout=5)
        assert not any(thread.is_alive() for thread in threads)
        assert len(failures) == 8 and all("closed" in str(e) for e in failures)
        with pytest.raises(MatchTrackerError):
            client.find_match(4)
        client.close()


def test_asyncio_nodes_answer_and_close_with_async_with() -> None:
    async def main() -> None:
        async with aio.Tracker.start(timeout=SHORT, early=True) as tracker:
            async with aio.Server.start("S1", tracker.address, number=4), aio.Server.start(
                "S2", tracker.address, number=9
            ):
                await tracker.wait_for_nodes(2)
                async with aio.Client.connect("C1", tracker.address) as client:
                    assert await client.find_match(4) == ["S1"]
                    assert await client.find_match(5) == []
            client = await aio.Client.connect("C2", tracker.address)
            assert await client.find_match(4) == []
            await client.close()
        with pytest.raises(MatchTrackerError):
            tracker.stats()

    asyncio.run(main())


def test_asyncio_gather_of_a_thousand_calls_on_one_client() -> None:
    async def main() -> None:
        async with aio.Tracker.start(timeout=SHORT) as tracker, aio.Server.start(
            "S1", tracker.address, number=3
        ), aio.Client.connect("C1", tracker.address) as client:
            answers = await asyncio.gather(*(client.find_match(3 + i % 2) for i in range(1000)))
            assert answers == [["S1"] if i % 2 == 0 else [] for i in range(1000)]
            assert tracker.stats()["requests"] == 1000

    asyncio.run(main())


def test_cancelling_a_call_frees_its_request_on_the_tracker() -> None:
    async def main() -> None:
        async with aio.Tracker.start(timeout=60) as tracker, aio.Server.start(
            "S1", tracker.address, number=3
        ), aio.Client.connect("C1", tracker.address) as client:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.find_match(5), 0.1)
            await open_requests(tracker, 0)
            task = asyncio.ensure_future(client.find_match(5))
            await open_requests(tracker, 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await open_requests(tracker, 0)
            # The connection is as good as before.
            assert tracker.stats()["clients"] == 1

    asyncio.run(main())


def test_asyncio_errors_are_the_packages_with_their_code() -> None:
    async def main() -> None:
        async with aio.Tracker.start(timeout=SHORT, token="right") as tracker:
            with pytest.raises(RefusedError) as caught:
                await aio.Client.connect("C1", tracker.address, token="wrong")
            assert caught.value.code == "unauthorized"
            async with aio.Client.connect("C1", tracker.address, token="right") as client:
                with pytest.raises(ValueError, match="number must be from 1 to 10"):
                    client.find_match(11)

    asyncio.run(main())


def test_a_storm_of_answers_never_loses_one() -> None:
    """Answers finishing on the runtime's threads while the loop drains earlier ones: every
    awaitable is settled, round after round."""

    async def main() -> None:
        async with aio.Tracker.start(timeout=5, early=True) as tracker, aio.Server.start(
            "S1", tracker.address, number=3
        ), aio.Server.start("S2", tracker.address, number=4), aio.Client.connect("C1", tracker.address) as client:
            for _ in range(20):
                answers = await asyncio.wait_for(
                    asyncio.gather(*(client.find_match(3 + i % 3) for i in range(200))), 30
                )
                assert answers == [[["S1"], ["S2"], []][i % 3] for i in range(200)]

    asyncio.run(main())
