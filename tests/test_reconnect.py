"""Library nodes that outlive their tracker: the tracker restarted on the same address under
a blocking client and server and an asyncio server, the same objects answering exactly
afterwards; a request in flight at the stop answered by the drain; `reconnect=False` as a
closed connection."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import pytest

import matchtracker as mt
from matchtracker import aio

SHORT = 0.2


def test_a_client_and_a_server_come_back_with_a_restarted_tracker() -> None:
    tracker = mt.Tracker(timeout=SHORT)
    port = tracker.port
    server = mt.Server("S1", tracker.address, number=4)
    client = mt.Client("C1", tracker.address)
    try:
        assert client.find_match(4) == ["S1"]
        tracker.close()
        # Restarted on the same address: the server registers again by itself, with the
        # same name and number.
        tracker = mt.Tracker(port=port, timeout=SHORT)
        tracker.wait_for_nodes(1, timeout=5)
        # The client finds its connection gone, reconnects within the call and asks again.
        assert client.find_match(4) == ["S1"]
        assert client.find_match(5) == []
        assert tracker.stats()["clients"] == 1 and tracker.stats()["servers"] == 1
    finally:
        client.close()
        server.close()
        tracker.close()


def test_a_request_in_flight_at_the_stop_is_answered_and_the_next_goes_to_the_new_tracker() -> None:
    tracker = mt.Tracker(timeout=1.0)
    port = tracker.port
    with mt.Server("S1", tracker.address, number=4) as server, mt.Client("C1", tracker.address) as client:
        # A server typed by hand, which never replies: its QUERY line is the moment the
        # request is open at the tracker.
        host, tracker_port = tracker.address.rsplit(":", 1)
        raw = socket.create_connection((host, int(tracker_port)), timeout=10)
        lines = raw.makefile("r", encoding="utf-8")
        raw.sendall(b"HELLO S9\n")
        assert lines.readline().startswith("WELCOME S9 ")
        got: list[list[str]] = []
        # Nobody holds 6: the request stays open until the deadline, past the stop's start.
        asking = threading.Thread(target=lambda: got.append(client.find_match(6)))
        asking.start()
        assert lines.readline().startswith("QUERY ")
        tracker.close()  # drains: answers the open request at its deadline, then BYE
        asking.join()
        raw.close()
        assert got == [[]]
        tracker = mt.Tracker(port=port, timeout=SHORT)
        try:
            tracker.wait_for_nodes(1, timeout=5)
            assert client.find_match(4) == ["S1"]
        finally:
            server.close()
            client.close()
            tracker.close()


def test_reconnect_false_fails_as_a_closed_connection_does() -> None:
    tracker = mt.Tracker(timeout=SHORT)
    port = tracker.port
    client = mt.Client("C1", tracker.address, reconnect=False)
    try:
        assert client.find_match(1) == []
        tracker.close()
        tracker = mt.Tracker(port=port, timeout=SHORT)
        with pytest.raises(mt.NetworkError):
            client.find_match(1)
        with pytest.raises(mt.NetworkError):
            client.find_match(1)
        assert tracker.stats()["clients"] == 0
    finally:
        client.close()
        tracker.close()


def test_reconnect_for_is_checked() -> None:
    with pytest.raises(ValueError, match="reconnect_for must be more than 0"):
        mt.Client("C1", "127.0.0.1:1", reconnect_for=0)
    with pytest.raises(TypeError, match="reconnect_for must be a number of seconds"):
        mt.Server("S1", "127.0.0.1:1", number=1, reconnect_for="1")


def test_an_asyncio_client_comes_back_with_a_restarted_tracker() -> None:
    async def main() -> None:
        tracker = await aio.Tracker.start(timeout=SHORT)
        port = tracker.port
        server = mt.Server("S3", tracker.address, number=2)
        try:
            async with aio.Client.connect("C3", tracker.address) as client:
                assert await client.find_match(2) == ["S3"]
                await tracker.close()
                tracker = await aio.Tracker.start(port=port, timeout=SHORT)
                await tracker.wait_for_nodes(1, timeout=5)
                # The same client: the loss shows on its next request, which is sent again
                # on the new connection; requests made meanwhile wait for it.
                got = await asyncio.gather(*(client.find_match(n) for n in (2, 3, 2)))
                assert got == [["S3"], [], ["S3"]]
                assert tracker.stats()["clients"] == 1
        finally:
            server.close()
            await tracker.close()

    asyncio.run(main())


def test_an_asyncio_client_without_reconnect_fails_as_before() -> None:
    async def main() -> None:
        tracker = await aio.Tracker.start(timeout=SHORT)
        port = tracker.port
        async with aio.Client.connect("C4", tracker.address, reconnect=False) as client:
            assert await client.find_match(2) == []
            await tracker.close()
            tracker = await aio.Tracker.start(port=port, timeout=SHORT)
            with pytest.raises(mt.NetworkError):
                await client.find_match(2)
            with pytest.raises(mt.NetworkError):
                await client.find_match(2)
        await tracker.close()

    asyncio.run(main())


def test_an_asyncio_server_comes_back_with_a_restarted_tracker() -> None:
    async def main() -> None:
        tracker = await aio.Tracker.start(timeout=SHORT)
        port = tracker.port
        async with aio.Server.start("S2", tracker.address, number=7):
            await tracker.close()
            tracker = await aio.Tracker.start(port=port, timeout=SHORT)
            await tracker.wait_for_nodes(1, timeout=5)
            async with aio.Client.connect("C2", tracker.address) as client:
                assert await client.find_match(7) == ["S2"]
        await tracker.close()

    asyncio.run(main())


def test_callbacks_and_the_logger_hear_one_disconnect_and_one_reconnect(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="matchtracker")
    tracker = mt.Tracker(timeout=SHORT)
    port = tracker.port
    server = mt.Server("S5", tracker.address, number=4)
    client = mt.Client("C5", tracker.address)
    heard: dict[str, list[tuple[str, str]]] = {"S5": [], "C5": []}
    back = {"S5": threading.Event(), "C5": threading.Event()}
    for node in (server, client):
        name = node.name
        mt.watch(
            node,
            on_disconnect=lambda why, name=name: heard[name].append(("lost", why)),
            on_reconnect=lambda at, name=name: (heard[name].append(("back", at)), back[name].set()),
        )
    try:
        tracker.close()
        tracker = mt.Tracker(port=port, timeout=SHORT)
        assert back["S5"].wait(5)
        assert client.find_match(4) == ["S5"]
        assert back["C5"].wait(5)
        for name in ("S5", "C5"):
            assert [kind for kind, _ in heard[name]] == ["lost", "back"], heard
            assert heard[name][1][1] == tracker.address
            logged = [(r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith(name + " ")]
            assert logged == [
                (logging.WARNING, f"{name} lost its tracker ({heard[name][0][1]})"),
                (logging.INFO, f"{name} registered again with {tracker.address}"),
            ], logged
    finally:
        client.close()
        server.close()
        tracker.close()


def test_an_asyncio_node_hears_on_its_own_loop() -> None:
    async def main() -> None:
        tracker = await aio.Tracker.start(timeout=SHORT)
        port = tracker.port
        loop_thread = threading.get_ident()
        async with aio.Server.start("S6", tracker.address, number=3) as server:
            threads: list[int] = []
            back = asyncio.Event()
            mt.watch(server, on_reconnect=lambda at: (threads.append(threading.get_ident()), back.set()))
            await tracker.close()
            tracker = await aio.Tracker.start(port=port, timeout=SHORT)
            await asyncio.wait_for(back.wait(), 5)
            assert threads == [loop_thread]
        await tracker.close()

    asyncio.run(main())


def test_watch_refuses_a_callback_that_cannot_be_called() -> None:
    with mt.Tracker(timeout=SHORT) as tracker, mt.Client("C7", tracker.address) as client:
        with pytest.raises(TypeError, match="must be callable"):
            mt.watch(client, on_disconnect="print")
