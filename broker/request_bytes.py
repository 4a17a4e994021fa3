"""How many bytes of large requests the broker decodes and handles at once.

gRPC hands a request over whole; decoding it takes as much again, and the handler keeps both
until it answers. 30 callers of 9.5 MB submits (under the request limit, each refused by its
tenant's `max_spec_bytes`) took the broker to 790 MB. Past the budget a large request is
answered RESOURCE_EXHAUSTED before it is decoded; small requests are never counted.
"""

from __future__ import annotations

LARGE_REQUEST_BYTES = 1024 * 1024
"""Requests of at least this size count against the budget (a batch of 2,000 jobs is ~0.1 MB)."""


class RequestBytes:
    """Bytes of large requests being decoded or handled, kept within `budget` (all or nothing).

    Unlocked, on purpose: one server's `DecodeGuard` alone calls `take` and `give`, from its
    coroutine handlers, so on that server's event loop only (grpc.aio runs a coroutine handler
    on the loop; its thread pool runs plain functions, which the guard wraps in a coroutine).
    No await falls between a check and its update. Calling it from another thread needs a lock.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.held = 0

    def take(self, size: int) -> bool:
        """Count `size` in; False (nothing counted) when that would pass the budget. One request
        alone is always taken: the request limit, not this, bounds a single one."""
        if self.held and self.held + size > self.budget:
            return False
        self.held += size
        return True

    def give(self, size: int) -> None:
        self.held = max(0, self.held - size)

    def refusal(self, size: int) -> str:
        """Why a request of `size` bytes was not taken, with the numbers."""
        return (
            f"the broker is busy with large requests: {self.held} bytes of requests of"
            f" {LARGE_REQUEST_BYTES} bytes or more are being handled, and it handles at most"
            f" {self.budget} bytes of them at once (twice its request limit); this request"
            f" ({size} bytes) was not read: retry shortly"
        )
