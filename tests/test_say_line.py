"""`szb serve`'s own stdout lines ("szb: scheduler serving on port N") are written whole.

Seen in CI: `print` wrote the text and its newline apart and a log line from the election thread
landed between them ("szb: scheduler serving on port 116772026-12-03 17:34:17,607 WARNING ..."):
the test harness read port 116772026 and connected to 116772026 mod 65536, where nothing listened.
"""

from __future__ import annotations

import io
import logging
import threading

import pytest

from broker import logs
from broker.logs import say


@pytest.fixture(autouse=True)
def text_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plain `szb:` form: an earlier test in this process may have configured JSON logs."""
    monkeypatch.setattr(logs, "_say_json", False)


class Writes(io.StringIO):
    """A stream that keeps each write call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, s: str) -> int:
        self.calls.append(s)
        return super().write(s)


def test_a_line_is_one_write_with_its_newline() -> None:
    out = Writes()
    say("scheduler serving on port 11677", out)
    assert out.calls == ["szb: scheduler serving on port 11677\n"]


def test_lines_stay_whole_beside_a_thread_logging_to_the_same_stream() -> None:
    out = Writes()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("tests.say_line")
    logger.addHandler(handler)
    logger.propagate = False
    stop = threading.Event()

    def chatter() -> None:
        while not stop.is_set():
            logger.warning("elected active scheduler (epoch 1)")

    thread = threading.Thread(target=chatter)
    thread.start()
    try:
        for port in range(2000):
            say(f"serving on port {port}", out)
    finally:
        stop.set()
        thread.join()
        logger.removeHandler(handler)
    lines = out.getvalue().splitlines()
    ours = [ln for ln in lines if ln.startswith("szb: ")]
    assert ours == [f"szb: serving on port {port}" for port in range(2000)]
    assert all(ln in ("elected active scheduler (epoch 1)",) or ln.startswith("szb: ") for ln in lines)
