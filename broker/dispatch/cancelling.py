"""Cancelling a job: its state recorded first, then its live attempts stopped at their backends.

A backend's stop can take a job's whole grace period (the local executor waits out SIGTERM
before SIGKILL; a Slurm or cloud call can be slow): the caller's answer waits only a moment for
it, then the stop goes on in the background. The job is CANCELLED already; its units stay
held until the stop is done, and the attempt is closed (and its output kept) then.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from adapters.base import Adapter, AdapterError
from broker.dispatch.attempts import AttemptTracking
from broker.dispatch.ended_first import ended_first
from broker.model import BROKER_SIDE, Attempt, AttemptState, Job, JobId, JobState
from broker.store import TOO_LATE

log = logging.getLogger(__name__)

ANSWER_WITHIN_S = 2.0
"""How long a cancel's answer waits for its backends' stops (a prompt one keeps its output)."""


class Cancelling(AttemptTracking):
    """The part of the dispatcher that cancels jobs; mixed into `Dispatcher`."""

    async def cancel(self, job: Job, *, by: str = "", role: str = "") -> Job:
        """Cancel a job wherever it is (unless it ended since the last poll); the backend is told
        after the state is recorded. `by` and `role` name who asked, for the audit trail."""
        if job.state.terminal:
            return job
        ended = await ended_first(self.store.attempts_for(job.id), self.adapters, self.planner.needs_agent)
        for attempt, status in ended:  # it finished since the last poll: its result stands
            self.apply_status(attempt, status)
        if ended and (job := self.store.get(job.id)).state.terminal:  # (re-read only if one ended)
            return job
        who = {"by": by, "role": role} if by else {}
        job = self.store.transition(
            job.id,
            JobState.CANCELLED,
            self.clock.now(),
            kind="cancelled",
            message=f"cancelled by {by}" + (f" ({role})" if role else "") if by else "cancelled by the user",
            data={**who, "policy_hash": self.planner.policy.hash},  # (the audit trail names it)
            expect=job.state,
        )
        if job.state != JobState.CANCELLED:
            return await self.cancel(job, by=by, role=role)  # it moved meanwhile: retry from there
        self.planner.reclaimer.release(job.id)  # units reclaimed for it are no longer kept off others
        await self.stop_attempts(job)
        return self.store.get(job.id)

    async def settle_cancel_request(self, job_id: JobId) -> None:
        """A cancel an API replica recorded (it cannot ask a backend whether the run ended):
        cancel the job as one asked here is, unless its run ended first, which is then said."""
        request = self.store.cancel_request(job_id)
        if request is None:
            return
        job = self.store.get(job_id)
        if not job.state.terminal:
            job = await self.cancel(job, by=request.by, role=request.role)
        if job.state != JobState.CANCELLED:  # it ended on its own before the cancel: its result stands
            who = {"by": request.by, "role": request.role} if request.by else {}
            asked = request.time.isoformat(timespec="seconds")
            self.store.record(
                job_id, self.clock.now(), kind=TOO_LATE, data={**who, "result": job.state.value},
                message=f"the cancel asked at {asked} came too late: the job had ended {job.state.value}",
            )
        self.store.drop_cancel_request(job_id)

    async def stop_attempts(self, job: Job, *, answer_within_s: float = ANSWER_WITHIN_S) -> None:
        """Stop an ended job's live attempts at their backends, waiting at most `answer_within_s`."""
        stops = []
        for attempt in self.store.attempts_for(job.id):
            if attempt.state.terminal:
                continue
            if attempt.backend_id is None:
                if job.id not in self._inflight:  # never sent anywhere: nothing to stop
                    self.store.update_attempt(attempt.id, self.clock.now(), state=AttemptState.CANCELLED)
                    self.store.settle_spend(attempt.id, spent=0.0, voucher=0.0)
                continue  # a launch in flight cancels itself once it sees the job ended
            adapter = self.adapters.get(attempt.site)
            if adapter is None:
                continue
            self._stops_in_flight.add(attempt.id)  # reports meanwhile do not stop it a second time
            stops.append(self._spawn(self._stop(job, attempt, adapter)))
        if stops:
            await asyncio.wait(stops, timeout=answer_within_s)
        self.capacity_changed()

    async def _stop(self, job: Job, attempt: Attempt, adapter: Adapter) -> None:
        assert attempt.backend_id is not None
        try:
            await asyncio.to_thread(adapter.cancel, attempt.backend_id, attempt.token)
        except AdapterError as exc:  # a later poll or report stops it again (_stop_leftover)
            log.warning("cancel of %s at %s failed: %s", attempt.id, attempt.site, exc)
            return
        finally:
            self._stops_in_flight.discard(attempt.id)
        if self.cancelled(job, attempt):
            await self.keep_output(job, attempt, adapter)
        self.capacity_changed()  # its units are free now

    def _close_unstarted(self, attempt: Attempt, now: datetime, why: str) -> None:
        """Close an attempt no backend was ever asked to start; its reservation is released."""
        self.store.update_attempt(attempt.id, now, state=AttemptState.CANCELLED, error=BROKER_SIDE + why)
        self.store.settle_spend(attempt.id, spent=0.0, voucher=0.0)
