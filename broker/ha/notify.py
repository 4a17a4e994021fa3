"""Wake-ups between broker processes over PostgreSQL LISTEN/NOTIFY.

Notifications only say *that* something happened (a job got an event, an agent is alive);
what happened is always read from the store. They are not durable: every reader also polls
(watchers re-read events every few seconds, the scheduler rescans its queue), so a lost
notification costs latency, never correctness.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "szb_ha"
MAX_BATCH = 200
RETRY_S = 1.0

Note = dict[str, Any]
"""One notification: `{"s": sender, "j": job id, "e": event kind}` or `{"s", "hb": attempt}`."""


class Notifier:
    """Sends notifications from a thread of its own (callers never wait on the database)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.sender = uuid.uuid4().hex[:12]
        self._queue: queue.SimpleQueue[Note | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self._thread.start()

    def send(self, note: Note) -> None:
        self._queue.put({"s": self.sender, **note})

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _batch(self) -> list[Note] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)
                break
            batch.append(item)
        return batch

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[Any, ...]] | None = None
        while (batch := self._batch()) is not None:
            conn = self._send(conn, [json.dumps(note) for note in batch])
        if conn is not None:
            conn.close()

    def _send(
        self, conn: psycopg.Connection[tuple[Any, ...]] | None, payload: list[str]
    ) -> psycopg.Connection[tuple[Any, ...]] | None:
        """Send one batch; returns the connection to use next (None after a failure)."""
        import psycopg

        usable = conn is not None and not conn.closed and not conn.broken
        for reuse in (True, False) if usable else (False,):
            try:
                if not reuse or conn is None:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                # One statement for the whole batch (a flood of submits is one round trip,
                # not one per job); delivered together, at commit.
                conn.execute("SELECT pg_notify(%s, note) FROM unnest(%s::text[]) AS note", (CHANNEL, payload))
                return conn
            except Exception as exc:
                if reuse:  # it died while idle (the server restarted): once more on a new one
                    continue
                # Down: readers poll as well, so a lost wake-up only costs latency.
                log.info("could not send %d notification(s): %s", len(payload), exc)
        return None


class Listener:
    """Receives notifications in a thread and hands each to `deliver` (from that thread)."""

    def __init__(self, dsn: str, deliver: Callable[[Note], None], *, ignore_sender: str = "") -> None:
        self.dsn = dsn
        self.deliver = deliver
        self.ignore_sender = ignore_sender
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="listener", daemon=True)
        self.on_reconnect: Callable[[bool], None] = lambda first: None
        """Called after (re)connecting (`first` on the first connection): notifications may have
        been missed meanwhile."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.on_reconnect(first)
                    first = False
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5):
                            self._handle(n.payload)
            except Exception as exc:
                log.info("notification listener reconnecting: %s", exc)
                self._stop.wait(RETRY_S)

    def _handle(self, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if not isinstance(note, dict) or (self.ignore_sender and note.get("s") == self.ignore_sender):
            return
        try:
            self.deliver(note)
        except Exception:  # one bad note must not stop the listener
            log.exception("handling a notification failed")
