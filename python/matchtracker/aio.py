"""matchtracker for asyncio: the same nodes as `matchtracker`, whose waiting methods are
awaitables, run on the same Rust core.

    import asyncio
    from matchtracker import aio

    async def main():
        async with aio.Tracker.start(timeout=0.5) as tracker:
            async with aio.Server.start("S1", tracker.address, number=4):
                async with aio.Client.connect("C1", tracker.address) as client:
                    print(await client.find_match(4))          # ['S1']
                    answers = await asyncio.gather(*(client.find_match(4) for _ in range(1000)))

    asyncio.run(main())

`Tracker.start`, `Server.start` and `Client.connect` are awaited (`node = await
aio.Client.connect(...)`) or entered (`async with aio.Client.connect(...) as node`, which
closes the node at the end); `close()` is awaited. Many `find_match` calls may be in flight
at once on one client; cancelling one (a task's `cancel()`, `asyncio.wait_for` running out)
frees its request on the tracker too. Errors are the package's own
(`matchtracker.RefusedError` and the rest), with `.code` for the protocol's error codes.
"""

from ._core import AsyncClient as Client
from ._core import AsyncServer as Server
from ._core import AsyncTracker as Tracker
from ._core import Opening

__all__ = ["Client", "Opening", "Server", "Tracker"]
