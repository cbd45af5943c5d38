"""What library nodes tell their owners: a node lost its tracker, is registered again, or
ended on its own. The Rust runtime queues each and wakes one watcher thread here by a byte
on a socket; the watcher logs it on the ``matchtracker`` logger (WARNING lost, INFO back,
ERROR ended) and calls the callbacks given to :func:`watch`: on the event loop that was
running when ``watch`` was called (so an asyncio program's callbacks run on its loop), or
else on the watcher thread. No runtime thread ever waits for Python, so a slow callback or
logging handler holds up no connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any, Callable, Optional

from . import _core

logger = logging.getLogger("matchtracker")

Callback = Callable[[str], Any]

_lock = threading.Lock()
_started = False
_callbacks: dict[int, tuple[Optional[asyncio.AbstractEventLoop], dict[str, Optional[Callback]]]] = {}


def start() -> None:
    """Starts the watcher thread, once per process (a node's constructor calls it)."""
    global _started
    with _lock:
        if _started:
            return
        reader, writer = socket.socketpair()
        writer.setblocking(False)
        # The writing end stays open for the life of the process: the runtime writes to it.
        _core._watch_with(writer.detach())
        threading.Thread(target=_run, args=(reader,), name="matchtracker-watch", daemon=True).start()
        _started = True


def watch(
    node: Any,
    *,
    on_disconnect: Optional[Callback] = None,
    on_reconnect: Optional[Callback] = None,
    on_end: Optional[Callback] = None,
) -> None:
    """Calls `on_disconnect(reason)` when `node` loses its tracker, `on_reconnect(address)`
    when it is registered again, and `on_end(reason)` when it ends on its own (its name was
    taken meanwhile, or it could not reach a tracker for `reconnect_for` seconds). Called
    from a coroutine, the callbacks run on that event loop; otherwise on matchtracker's
    watcher thread. A callback that raises is logged, and the others still run. Calling
    `watch` again for the same node replaces its callbacks."""
    try:
        event_loop: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
    except RuntimeError:
        event_loop = None
    callbacks = {"lost": on_disconnect, "back": on_reconnect, "ended": on_end}
    for name, callback in callbacks.items():
        if callback is not None and not callable(callback):
            raise TypeError(f"the callback for {name!r} must be callable, not {type(callback).__name__}")
    with _lock:
        _callbacks[node._key] = (event_loop, callbacks)


_LEVELS = {"lost": logging.WARNING, "back": logging.INFO, "ended": logging.ERROR}
_WORDS = {"lost": "lost its tracker ({})", "back": "registered again with {}", "ended": "ended: {}"}


def _run(reader: socket.socket) -> None:
    while True:
        try:
            if not reader.recv(4096):
                return
        except OSError:
            return
        happenings, dropped = _core._take_happenings()
        if dropped:
            logger.warning("%d node events were dropped: nobody took them in time", dropped)
        for key, name, kind, text in happenings:
            logger.log(_LEVELS[kind], "%s %s", name, _WORDS[kind].format(text))
            with _lock:
                event_loop, callbacks = _callbacks.get(key, (None, {}))
            callback = callbacks.get(kind)
            if callback is None:
                continue
            if event_loop is not None:
                try:
                    event_loop.call_soon_threadsafe(_call, callback, text)
                except RuntimeError:  # the loop has closed
                    pass
            else:
                _call(callback, text)


def _call(callback: Callback, text: str) -> None:
    try:
        callback(text)
    except Exception:  # a user's callback must not end the watcher
        logger.exception("a matchtracker callback raised")
