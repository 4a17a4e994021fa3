"""A new leader's recovery never fails its term over a job another process finished meanwhile.

Found by an HA review: `Dispatcher.recover` reads the active jobs, then each job's attempts.
An API replica that takes an agent's exit report between the two reads ends the attempt and the
job (SUCCEEDED); recovery, seeing no live attempt, moved the finished job to QUEUED, the store
refused (`SUCCEEDED -> QUEUED`), and the whole term failed: the candidate resigned and waited a
lease period, with a fleet reporting steadily, again and again. A real SQLite store; the
replica's write is made through a second store on the same file, as another process makes it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from broker.clock import SystemClock
from broker.dispatch.dispatcher import Dispatcher
from broker.model import AttemptState, JobId, JobSpec, JobState, Offer, SiteId, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.store import JobMove, SqliteStore, Submission
from tests.e2e.conftest import write_broker_config

NOW = datetime.now(UTC) - timedelta(minutes=10)
OFFER = Offer(site=SiteId("local"), instance_type="a800", accelerator="A800", count=1, price_per_hour=14.0)


class ReplicaFinishesMeanwhile(SqliteStore):
    """This process's store; between recovery's two reads, another process ends one job."""

    finish: JobId | None = None

    def attempts_for(self, job_id: JobId):  # type: ignore[no-untyped-def]
        if job_id == self.finish:
            self.finish = None
            replica = SqliteStore(self.path)
            [attempt] = replica.attempts_for(job_id)
            replica.update_attempt(
                attempt.id, datetime.now(UTC), state=AttemptState.SUCCEEDED,
                moves=[JobMove(JobState.SUCCEEDED, "finished", "exit code 0")],
            )
            replica.close()
        return super().attempts_for(job_id)


def test_recovery_leaves_a_job_finished_meanwhile_finished(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    store = ReplicaFinishesMeanwhile(tmp_path / "broker.db")
    spec = JobSpec.model_validate({"name": "done", "command": ["true"], "runtime_estimate": "10m"})
    ids = []
    for name in ("finished-meanwhile", "still-running"):
        named = Submission(spec.model_copy(update={"name": name}))
        [(job, _)] = store.submit(TenantId("team-a"), [named], NOW)
        store.transition(job.id, JobState.PLACING, NOW)
        attempt = store.create_attempt(job.id, OFFER.site, OFFER, f"tok-{name}", NOW)
        store.update_attempt(
            attempt.id, NOW, state=AttemptState.RUNNING, backend_id=f"pid-{name}",
            moves=[JobMove(JobState.PROVISIONING, "attempt", ""), JobMove(JobState.RUNNING, "running", "")],
        )
        ids.append(job.id)
    store.finish = ids[0]
    planner = Planner(PolicyWatcher(config.parent / "policy.yaml"), SystemClock())
    dispatcher = Dispatcher(store, {}, planner=planner, clock=SystemClock())
    asyncio.run(dispatcher.recover())  # raised IllegalTransitionError: SUCCEEDED -> QUEUED
    assert store.get(ids[0]).state == JobState.SUCCEEDED
    assert store.get(ids[1]).state == JobState.RUNNING
    store.close()
