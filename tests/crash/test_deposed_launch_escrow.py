"""A leader deposed in the middle of a launch leaves the launch's escrowed secret to the next one.

Found by an HA review: PostgreSQL stalled while RunInstances was answered; the deposed leader's
write of the backend id was refused (`NotLeaderWriteError`), the launch's `finally` deleted the
escrowed secret from the shared data dir, and the new leader, resuming the launch by its token,
found none and minted another: it adopted the instance the old secret started, whose every
report was then refused (UNAUTHENTICATED), the job stuck RUNNING while the instance billed.
Here the deposed leader's store refuses the write, as the in-process guard does; the adapter is
the real local executor.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.local import LocalAdapter
from broker.agent_secret import SecretEscrow
from broker.clock import SystemClock
from broker.dispatch.dispatcher import Dispatcher
from broker.ha.guard import NotLeaderWriteError
from broker.model import Attempt, JobSpec, JobState, SiteId, TenantId
from broker.planning import Planner
from broker.policy import PolicyWatcher
from broker.store import SqliteStore, Submission
from tests.brokerproc import JOB_PYTHON
from tests.e2e.conftest import write_broker_config


class DeposedMidLaunch(SqliteStore):
    """This process's store once another scheduler leads: a backend id is not recorded."""

    def update_attempt(self, attempt_id: str, now: datetime, **fields: Any) -> Attempt:
        if fields.get("backend_id"):
            raise NotLeaderWriteError("update_attempt refused: not the active scheduler")
        return super().update_attempt(attempt_id, now, **fields)


def test_a_deposed_leader_keeps_the_escrowed_secret_for_the_next(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    store = DeposedMidLaunch(tmp_path / "broker.db")
    adapter = LocalAdapter(SiteId("local"), {"data_dir": str(tmp_path / "jobs"), "cpus": 2})
    offer = next(o for o in adapter.offers(datetime.now(UTC)) if o.accelerator is None)
    spec = JobSpec.model_validate({"name": "deposed", "command": [JOB_PYTHON, "-c", "pass"],
                                   "runtime_estimate": "10m"})
    [(job, _)] = store.submit(TenantId("team-a"), [Submission(spec)], datetime.now(UTC))
    job = store.transition(job.id, JobState.PLACING, datetime.now(UTC))
    attempt = store.create_attempt(job.id, offer.site, offer, "tok-deposed", datetime.now(UTC))
    escrow = SecretEscrow(tmp_path / "launching")
    escrow.put(attempt.id, "the-secret-the-instance-got")
    planner = Planner(PolicyWatcher(config.parent / "policy.yaml"), SystemClock())
    dispatcher = Dispatcher(store, {SiteId("local"): adapter}, planner=planner, clock=SystemClock(),
                            escrow=escrow)
    try:
        asyncio.run(dispatcher._launch(job, attempt, None, "the-secret-the-instance-got"))
        assert escrow.get(attempt.id) == "the-secret-the-instance-got"  # the next leader's to resume
        assert store.get_attempt(attempt.id).state.value == "PENDING"  # not failed by the deposed one
    finally:
        for owned in adapter.list_owned():
            adapter.cancel(owned.backend_id, "tok-deposed")
        store.close()
