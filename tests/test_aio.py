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


def test_requests_that_do_not_fit_the_socket_go_out_whole_and_in_order() -> None:
    """A tracker (here a stand-in) that stops reading: the client's socket fills, the rest
    of its requests wait in the client and go out when the socket takes them again, every
    line whole and in order."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    # A small receive buffer, so that the client's socket fills early.
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    address = "127.0.0.1:%d" % listener.getsockname()[1]
    accepted: list[socket.socket] = []

    def stand_in() -> None:
        conn, _ = listener.accept()
        accepted.append(conn)
        assert conn.recv(100).startswith(b"HI C1")
        conn.sendall(b"WELCOME C1 60000 matches\n")

    thread = threading.Thread(target=stand_in)
    thread.start()

    async def main() -> None:
        client = await aio.Client.connect("C1", address)
        thread.join()
        conn = accepted[0]
        count = 400_000  # about 5.7 MB of FIND lines: more than the sockets hold (4 MB at most here)
        pending = [client.find_match(1 + i % 10) for i in range(count)]
        # The rest waits in the client, which has asked the loop to say when it can write.
        import selectors

        keys = asyncio.get_running_loop()._selector.get_map().values()  # type: ignore[attr-defined]
        assert any(key.events & selectors.EVENT_WRITE for key in keys)
        # Only now does the stand-in read, on a thread of its own, while the loop runs.
        received = bytearray()

        def read_all() -> None:
            while received.count(b"\n") < count:
                received.extend(conn.recv(65536))

        reader = threading.Thread(target=read_all)
        reader.start()
        while reader.is_alive():
            await asyncio.sleep(0.01)  # let the loop write what the socket takes
        lines = received.decode().splitlines()
        assert lines == [f"FIND {i + 1} {1 + i % 10}" for i in range(count)]
        conn.sendall(b"ANSWER 1 replied S9\n")
        assert await pending[0] == ["S9"]
        await client.close()
        with pytest.raises(MatchTrackerError):
            await pending[1]
        for future in pending[2:]:
            future.exception()  # retrieved, so asyncio does not warn about them
        conn.close()

    asyncio.run(main())
    listener.close()
