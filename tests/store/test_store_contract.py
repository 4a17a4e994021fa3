"""The store contract, run against every implementation (SQLite and PostgreSQL).

`StoreContract` holds the tests; each backend subclasses it and supplies `open_store`, a
factory that opens another store on the same database (a second connection, as a second
broker process would), so races and durability are tested across connections too.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.jobspec import AcceleratorRequest, Resources
from broker.model import (
    Attempt,
    AttemptId,
    AttemptState,
    Job,
    JobEvent,
    JobId,
    JobSpec,
    JobState,
    Offer,
    Priority,
    SiteId,
    TenantId,
)
from broker.states import IllegalTransitionError
from broker.store import (
    EVENT,
    REFUSAL,
    AuditCursor,
    AuditFilter,
    CancelRequest,
    FencedOut,
    JobMove,
    JobNotFoundError,
    JobStore,
    PolicyVersion,
    ReclaimBooking,
    ReclaimState,
    RefusedSubmission,
    SpendEntry,
    SqliteStore,
    StoreError,
    Submission,
)
from broker.store._sql_runs import RUN_STARTS_CHUNK
from broker.store.base import Draws
from broker.store.postgres import PostgresStore

NOW = datetime(2026, 11, 3, 8, 0, 0, 123456, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
A, B = TenantId("team-a"), TenantId("team-b")
OFFER = Offer(
    site=SiteId("aws-east"), instance_type="p4d.24xlarge", accelerator="A100", count=8, price_per_hour=3.5
)

StoreFactory = Callable[[], JobStore]


def spec(name: str = "train", **labels: str) -> JobSpec:
    return JobSpec(
        name=name, command=("python", "train.py"), runtime_estimate=timedelta(hours=1), labels=labels
    )


def entry(
    attempt: str, reserved: float, *, tenant: TenantId = A, month: str = "2026-11", site: str = "aws-east"
) -> SpendEntry:
    return SpendEntry(
        tenant=tenant,
        site=SiteId(site),
        job_id=JobId(attempt.rsplit("-a", 1)[0]),
        attempt_id=AttemptId(attempt),
        month=month,
        reserved=reserved,
    )


class StoreContract:
    """Tests every JobStore must pass; subclasses provide the `open_store` fixture."""

    __test__ = False
    INDEX_NAMED = ""
    """SQL naming an index by its name, in the store's catalog (each store's subclass)."""

    @pytest.fixture
    def open_store(self) -> Iterator[StoreFactory]:  # pragma: no cover - overridden
        raise NotImplementedError
        yield

    @pytest.fixture
    def store(self, open_store: StoreFactory) -> JobStore:
        return open_store()

    def submit_one(self, store: JobStore, tenant: TenantId = A, name: str = "train", **labels: str) -> Job:
        [(job, created)] = store.submit(tenant, [Submission(spec(name, **labels))], NOW)
        assert created
        return job

    # submit / get -------------------------------------------------------------------------

    def test_submit_stores_queued_jobs_with_a_first_event(self, store: JobStore) -> None:
        results = store.submit(A, [Submission(spec("one", team="x")), Submission(spec("two"))], NOW)
        assert [created for _, created in results] == [True, True]
        for job, _ in results:
            stored = store.get(job.id)
            assert stored == job
            assert stored.state is JobState.QUEUED
            assert stored.created_at == NOW and stored.updated_at == NOW
            assert stored.created_at.tzinfo is not None
            [event] = store.events_after(job.id, 0)
            assert (event.seq, event.kind, event.state, event.time) == (1, "submitted", JobState.QUEUED, NOW)
        assert results[0][0].id < results[1][0].id
        assert store.get(results[0][0].id).spec.labels == {"team": "x"}

    def test_jobs_are_found_by_client_id_per_tenant(self, store: JobStore) -> None:
        [(first, _)] = store.submit(A, [Submission(spec("one"), client_id="c-1")], NOW)
        store.submit(B, [Submission(spec("one"), client_id="c-2")], NOW)
        store.submit(A, [Submission(spec("three"), client_id="c\x00nul")], NOW)
        found = store.jobs_by_client_id(A, ["c-1", "c-2", "c-9", "", "c\x00nul"])
        assert set(found) == {"c-1", "c\x00nul"}  # B's c-2 is not A's
        assert found["c-1"] == store.get(first.id)
        assert store.jobs_by_client_id(A, []) == {}
        many = [f"k-{i}" for i in range(1200)]  # past one IN list's chunk
        store.submit(A, [Submission(spec("m"), client_id=c) for c in many[:3]], NOW)
        assert sorted(store.jobs_by_client_id(A, many)) == many[:3]

    def test_submit_is_idempotent_per_tenant_and_client_id(self, store: JobStore) -> None:
        [(first, created)] = store.submit(A, [Submission(spec("one"), client_id="c-1")], NOW)
        assert created and first.client_id == "c-1"
        [(again, created_again)] = store.submit(A, [Submission(spec("other"), client_id="c-1")], LATER)
        assert not created_again
        assert again == store.get(first.id) and again.spec.name == "one"
        [(other_tenant, created_b)] = store.submit(B, [Submission(spec("one"), client_id="c-1")], NOW)
        assert created_b and other_tenant.id != first.id
        # Within one batch, and without a client_id (never deduplicated).
        batch = store.submit(
            A,
            [
                Submission(spec("x"), client_id="c-2"),
                Submission(spec("x"), client_id="c-2"),
                Submission(spec("x")),
                Submission(spec("x")),
                Submission(spec("x"), client_id=""),
            ],
            NOW,
        )
        assert [c for _, c in batch] == [True, False, True, True, True]
        assert batch[0][0].id == batch[1][0].id
        assert len({j.id for j, _ in batch}) == 4
        assert batch[4][0].client_id is None
        assert len(store.list_jobs(A).jobs) == 5
        assert len(store.events_after(first.id, 0)) == 1

    def test_submit_idempotent_across_connections(self, open_store: StoreFactory) -> None:
        stores = [open_store() for _ in range(4)]
        barrier = threading.Barrier(len(stores))
        ids: list[JobId] = []

        def submit(s: JobStore) -> None:
            barrier.wait()
            [(job, _)] = s.submit(A, [Submission(spec(), client_id="same")], NOW)
            ids.append(job.id)

        threads = [threading.Thread(target=submit, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(ids)) == 1 and len(ids) == len(stores)
        assert len(stores[0].list_jobs(A).jobs) == 1

    def test_get_respects_tenants(self, store: JobStore) -> None:
        job = self.submit_one(store, A)
        assert store.get(job.id, A) == job
        assert store.get(job.id) == job
        with pytest.raises(JobNotFoundError):
            store.get(job.id, B)
        with pytest.raises(JobNotFoundError):
            store.get("j-missing")

    # list_jobs / jobs_in_states / count_by_state -------------------------------------------

    def test_list_jobs_pages_oldest_first_without_gaps(self, store: JobStore) -> None:
        ids = [self.submit_one(store, A, f"job{i}").id for i in range(7)]
        seen: list[JobId] = []
        token = ""
        pages = 0
        while True:
            page = store.list_jobs(A, page_size=3, page_token=token)
            seen.extend(j.id for j in page.jobs)
            pages += 1
            if not page.next_page_token:
                break
            assert page.next_page_token == page.jobs[-1].id
            token = page.next_page_token
        assert seen == ids == sorted(ids)
        assert pages == 3
        # A last page that is exactly full has no token.
        exact = store.list_jobs(A, page_size=7)
        assert len(exact.jobs) == 7 and exact.next_page_token == ""
        assert store.list_jobs(A, page_size=3, page_token=ids[-1]).jobs == []

    def test_list_jobs_filters_by_tenant_state_and_labels(self, store: JobStore) -> None:
        a1 = self.submit_one(store, A, "a1", team="vision", tier="gold")
        a2 = self.submit_one(store, A, "a2", team="vision", tier="silver")
        a3 = self.submit_one(store, A, "a3", team="nlp")
        b1 = self.submit_one(store, B, "b1", team="vision", tier="gold")
        store.transition(a2.id, JobState.PLACING, LATER)
        store.transition(a3.id, JobState.CANCELLED, LATER)

        def ids(tenant: TenantId | None, **kw: Any) -> list[JobId]:
            return [j.id for j in store.list_jobs(tenant, **kw).jobs]

        assert ids(A) == [a1.id, a2.id, a3.id]
        assert ids(B) == [b1.id]
        assert ids(None) == sorted([a1.id, a2.id, a3.id, b1.id])
        assert ids(A, states=[JobState.QUEUED]) == [a1.id]
        assert ids(A, states=[JobState.PLACING, JobState.CANCELLED]) == [a2.id, a3.id]
        assert ids(A, labels={"team": "vision"}) == [a1.id, a2.id]
        assert ids(A, labels={"team": "vision", "tier": "gold"}) == [a1.id]
        assert ids(None, labels={"tier": "gold"}) == sorted([a1.id, b1.id])
        assert ids(A, labels={"team": "vision"}, states=[JobState.PLACING]) == [a2.id]
        assert ids(A, labels={"team": "nope"}) == []
        assert ids(B, labels={"team": "nlp"}) == []

    def test_several_states_merge_oldest_first_within_the_limit(self, store: JobStore) -> None:
        """Several states are read as one merged, limited list (one index range per state)."""
        jobs = [
            self.submit_one(store, A if i % 3 else B, f"m{i}", team="x" if i % 2 else "y") for i in range(9)
        ]
        for i, state in (
            (0, JobState.PLACING),
            (4, JobState.PLACING),
            (5, JobState.CANCELLED),
            (7, JobState.PLACING),
        ):
            store.transition(jobs[i].id, state, LATER)
        for i in (2, 8):
            store.transition(jobs[i].id, JobState.PLACING, LATER)
            store.transition(jobs[i].id, JobState.PROVISIONING, LATER)
        live = [JobState.PLACING, JobState.PROVISIONING, JobState.RUNNING, JobState.PREEMPTED]
        expected = [jobs[i].id for i in (0, 2, 4, 7, 8)]
        assert [j.id for j in store.jobs_in_states(live)] == expected
        for limit in (1, 2, 4):
            assert [j.id for j in store.jobs_in_states(live, limit=limit)] == expected[:limit]
        seen, token = [], ""
        while True:
            page = store.list_jobs(
                None, states=[JobState.PROVISIONING, JobState.PLACING], page_size=2, page_token=token
            )
            seen.extend(j.id for j in page.jobs)
            if not (token := page.next_page_token):
                break
        assert seen == expected
        assert [j.id for j in store.list_jobs(A, states=live, labels={"team": "y"}).jobs] == [
            jobs[i].id for i in (2, 4, 8)
        ]
        assert [j.id for j in store.list_jobs(B, states=live).jobs] == [jobs[0].id]

    def test_jobs_in_states_and_counts(self, store: JobStore) -> None:
        jobs = [self.submit_one(store, A if i % 2 else B, f"j{i}") for i in range(5)]
        store.transition(jobs[1].id, JobState.PLACING, LATER)
        store.transition(jobs[3].id, JobState.FAILED, LATER)
        assert [j.id for j in store.jobs_in_states([JobState.QUEUED])] == [jobs[0].id, jobs[2].id, jobs[4].id]
        assert [j.id for j in store.jobs_in_states([JobState.QUEUED], limit=2)] == [jobs[0].id, jobs[2].id]
        assert [j.id for j in store.jobs_in_states([JobState.FAILED, JobState.PLACING])] == [
            jobs[1].id,
            jobs[3].id,
        ]
        assert store.jobs_in_states([]) == []
        assert store.count_by_state() == {JobState.QUEUED: 3, JobState.PLACING: 1, JobState.FAILED: 1}

    def test_queue_groups_are_each_tenants_jobs_asking_the_same_hardware(self, store: JobStore) -> None:
        assert store.queued_tenants() == [] and store.queued_up_to(10) == 0

        def gpus(name: str, kinds: tuple[str, ...], count: int = 1) -> JobSpec:
            return spec(name).model_copy(update={"resources": Resources(
                accelerators=AcceleratorRequest(count=count, any_of=kinds))})

        c = TenantId("team-c")
        work = [(B, gpus("b1", ("A800",))), (A, gpus("a1", ("A800",))), (B, gpus("b2", ("A800",))),
                (c, spec("c1")), (A, gpus("a2", ("A100", "A800"))), (A, gpus("a3", ("A800",), 2))]
        jobs = [store.submit(t, [Submission(s)], NOW)[0][0] for t, s in work]
        assert store.queued_tenants() == [A, B, c]
        mine = store.queue_groups(A, 100)
        assert len(mine) == 3 and mine == sorted(mine)  # one A800, A100-or-A800, two A800s
        assert store.queue_groups(A, 2) == mine[:2]  # a tenant's groups read are bounded
        heads = store.group_heads(A, [*mine, "no such group"])
        assert sorted(heads.values()) == [(1, jobs[1].id), (1, jobs[4].id), (1, jobs[5].id)]
        [theirs] = store.queue_groups(B, 100)
        assert theirs in mine  # the same hardware asked, whoever asks
        assert store.queued_up_to(4) == 4 and store.queued_up_to(100) == 6
        store.transition(jobs[3].id, JobState.CANCELLED, LATER)  # team-c's only job
        store.transition(jobs[0].id, JobState.PLACING, LATER)
        assert store.queued_tenants() == [A, B] and store.queue_groups(c, 100) == []
        assert [j.id for j in store.queue_head(B, theirs, page_size=5).jobs] == [jobs[2].id]
        assert store.queue_head(B, "no such group", page_size=5).jobs == []

    def test_a_group_of_many_long_accelerator_names_is_stored(self, store: JobStore) -> None:
        names = tuple(f"{i:02d}" + "x" * 126 for i in range(64))
        job = spec("wide").model_copy(update={"resources": Resources(
            accelerators=AcceleratorRequest(count=1, any_of=names))})
        [(stored, created)] = store.submit(A, [Submission(job)], NOW)
        [group] = store.queue_groups(A, 10)
        assert created and len(group) <= 200
        assert [j.id for j in store.queue_head(A, group, page_size=5).jobs] == [stored.id]

    def test_queue_head_is_a_groups_queue_by_priority_then_age_in_pages(self, store: JobStore) -> None:
        def submit(name: str, priority: Priority, tenant: TenantId = A, client_id: str | None = None) -> Job:
            item = Submission(spec(name).model_copy(update={"priority": priority}), client_id=client_id)
            [(job, _)] = store.submit(tenant, [item], NOW)
            return job

        n0, low1 = submit("n0", Priority.NORMAL), submit("l1", Priority.LOW)
        high2 = submit("h2", Priority.HIGH, client_id="resent-safely")  # the client_id insert path
        submit("other", Priority.HIGH, tenant=B)
        n3 = submit("n3", Priority.NORMAL)
        [group] = store.queue_groups(A, 10)
        first = store.queue_head(A, group, page_size=2)
        assert [j.id for j in first.jobs] == [high2.id, n0.id] and first.next_page_token
        rest = store.queue_head(A, group, page_size=2, page_token=first.next_page_token)
        assert [j.id for j in rest.jobs] == [n3.id, low1.id] and not rest.next_page_token
        # A priority lowered (a reload took the grant back) moves the job back; a started one leaves.
        lowered = n0.spec.model_copy(update={"priority": Priority.LOW})
        store.record(n0.id, LATER, kind="priority_lowered", spec=lowered.model_dump_json())
        store.transition(high2.id, JobState.PLACING, LATER)
        assert [j.id for j in store.queue_head(A, group, page_size=10).jobs] == [n3.id, n0.id, low1.id]
        assert store.queue_head(TenantId("nobody"), group, page_size=10).jobs == []

    # transition / record / events ----------------------------------------------------------

    def test_transition_moves_sets_fields_and_appends_one_event(self, store: JobStore) -> None:
        job = self.submit_one(store)
        published: list[JobEvent] = []
        store.add_listener(published.append)
        moved = store.transition(
            job.id, JobState.PLACING, LATER, kind="placing", message="choosing", data={"offers": 3}
        )
        assert moved.state is JobState.PLACING and moved.message == "choosing"
        assert moved.updated_at == LATER and moved.created_at == NOW
        assert store.get(job.id) == moved
        running = store.transition(
            job.id, JobState.PROVISIONING, LATER, site=SiteId("aws-east"), policy_hash="abc"
        )
        running = store.transition(job.id, JobState.RUNNING, LATER)
        assert (running.site, running.policy_hash, running.message) == ("aws-east", "abc", "choosing")
        done = store.transition(
            job.id, JobState.SUCCEEDED, LATER, exit_code=0, log_tail="ok\n", message="done"
        )
        assert (done.exit_code, done.log_tail, done.message) == (0, "ok\n", "done")
        events = store.events_after(job.id, 0)
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert [e.state for e in events] == [
            JobState.QUEUED,
            JobState.PLACING,
            JobState.PROVISIONING,
            JobState.RUNNING,
            JobState.SUCCEEDED,
        ]
        assert (events[1].kind, events[1].message, events[1].data, events[1].time) == (
            "placing",
            "choosing",
            {"offers": 3},
            LATER,
        )
        assert published == events[1:]

    def test_a_requeued_job_keeps_no_site(self, store: JobStore) -> None:
        # Requeued after a preemption or a lost attempt, it is at no site until placed again.
        job = self.submit_one(store)
        store.transition(job.id, JobState.PLACING, LATER, site=SiteId("onprem"))
        store.transition(job.id, JobState.PROVISIONING, LATER)
        store.transition(job.id, JobState.RUNNING, LATER)
        store.transition(job.id, JobState.PREEMPTED, LATER)
        assert store.get(job.id).site == "onprem"  # the preempted event's state still names it
        assert store.transition(job.id, JobState.QUEUED, LATER, kind="requeued").site is None
        assert store.transition(job.id, JobState.PLACING, LATER, site=SiteId("aws-east")).site == "aws-east"

    def test_illegal_transition_raises_and_changes_nothing(self, store: JobStore) -> None:
        job = self.submit_one(store)
        published: list[JobEvent] = []
        store.add_listener(published.append)
        with pytest.raises(IllegalTransitionError) as info:
            store.transition(job.id, JobState.SUCCEEDED, LATER, exit_code=0, message="nope")
        assert (info.value.old, info.value.new) == (JobState.QUEUED, JobState.SUCCEEDED)
        done = store.transition(job.id, JobState.CANCELLED, LATER)
        with pytest.raises(IllegalTransitionError):
            store.transition(job.id, JobState.QUEUED, LATER + timedelta(hours=1), site=SiteId("x"))
        assert store.get(job.id) == done
        assert [e.seq for e in store.events_after(job.id, 0)] == [1, 2]
        assert [e.state for e in published] == [JobState.CANCELLED]

    def test_unknown_fields_and_missing_jobs_are_rejected(self, store: JobStore) -> None:
        job = self.submit_one(store)
        with pytest.raises(StoreError):
            store.transition(job.id, JobState.PLACING, LATER, bogus=1)
        with pytest.raises(StoreError):
            store.record(job.id, LATER, kind="note", state="RUNNING")
        assert store.get(job.id) == job
        assert len(store.events_after(job.id, 0)) == 1
        with pytest.raises(JobNotFoundError):
            store.transition(JobId("j-missing"), JobState.PLACING, LATER)
        with pytest.raises(JobNotFoundError):
            store.record(JobId("j-missing"), LATER, kind="note")

    def test_expect_loses_races_gracefully(self, store: JobStore) -> None:
        job = self.submit_one(store)
        published: list[JobEvent] = []
        store.add_listener(published.append)
        placing = store.transition(job.id, JobState.PLACING, LATER, expect=JobState.QUEUED)
        assert placing.state is JobState.PLACING
        unchanged = store.transition(job.id, JobState.CANCELLED, LATER, expect=JobState.QUEUED, message="x")
        assert unchanged == placing
        # With a stale `expect`, even an illegal move is a quiet no-op.
        assert store.transition(job.id, JobState.SUCCEEDED, LATER, expect=JobState.RUNNING) == placing
        assert len(published) == 1
        assert [e.seq for e in store.events_after(job.id, 0)] == [1, 2]

    def test_concurrent_expect_has_exactly_one_winner(self, open_store: StoreFactory) -> None:
        stores = [open_store() for _ in range(6)]
        jobs = [self.submit_one(stores[0], A, f"j{i}") for i in range(5)]
        barrier = threading.Barrier(len(stores))
        wins: list[tuple[int, JobId]] = []
        errors: list[BaseException] = []

        def race(i: int, s: JobStore) -> None:
            barrier.wait()
            target = JobState.CANCELLED if i % 2 else JobState.PLACING
            for job in jobs:
                try:
                    after = s.transition(job.id, target, LATER, expect=JobState.QUEUED, message=f"w{i}")
                except BaseException as exc:
                    errors.append(exc)
                    continue
                if after.message == f"w{i}":
                    wins.append((i, job.id))

        threads = [threading.Thread(target=race, args=(i, s)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sorted(j for _, j in wins) == sorted(j.id for j in jobs)
        for job in jobs:
            events = stores[0].events_after(job.id, 0)
            assert [e.seq for e in events] == [1, 2]

    def test_record_appends_without_changing_state(self, store: JobStore) -> None:
        job = self.submit_one(store)
        store.transition(job.id, JobState.PLACING, NOW)
        published: list[JobEvent] = []
        store.add_listener(published.append)
        noted = store.record(job.id, LATER, kind="note", message="hello", data={"k": [1, 2]}, log_tail="tail")
        assert noted.state is JobState.PLACING and noted.log_tail == "tail" and noted.updated_at == LATER
        assert noted.message == ""  # record's message goes to the event only
        [event] = store.events_after(job.id, 2)
        assert (event.seq, event.kind, event.state, event.message, event.data) == (
            3,
            "note",
            JobState.PLACING,
            "hello",
            {"k": [1, 2]},
        )
        assert published == [event]

    def test_record_many_appends_in_one_go_and_skips_missing_jobs(self, store: JobStore) -> None:
        j1, j2 = self.submit_one(store, A, "a"), self.submit_one(store, B, "b")
        published: list[JobEvent] = []
        store.add_listener(published.append)
        store.record_many(
            [
                (j1.id, "tick", "one", {}),
                (JobId("j-missing"), "tick", "lost", {}),
                (j2.id, "tick", "two", {"n": 2}),
                (j1.id, "tick", "three", {}),
            ],
            LATER,
        )
        assert [(e.job_id, e.seq, e.message) for e in published] == [
            (j1.id, 2, "one"),
            (j2.id, 2, "two"),
            (j1.id, 3, "three"),
        ]
        assert [e.message for e in store.events_after(j1.id, 0)] == ["job accepted", "one", "three"]
        assert store.events_after(j2.id, 1)[0].data == {"n": 2}
        assert store.get(j1.id).updated_at == NOW  # record_many does not move the job's time
        store.record_many([], LATER)

    def test_run_times_are_the_first_run_and_the_end(self, store: JobStore) -> None:
        """`Job.start_time`/`end_time` for a page of jobs in one query."""
        ran, queued = self.submit_one(store, A, "ran"), self.submit_one(store, A, "queued")
        later = LATER + timedelta(minutes=5)
        for state, when in (
            (JobState.PLACING, LATER),
            (JobState.PROVISIONING, LATER),
            (JobState.RUNNING, LATER),
            (JobState.PREEMPTED, later),
            (JobState.QUEUED, later),
            (JobState.PLACING, later),
            (JobState.PROVISIONING, later),
            (JobState.RUNNING, later),
            (JobState.SUCCEEDED, later + timedelta(minutes=1)),
        ):
            store.transition(ran.id, state, when)
        times = store.run_times([ran.id, queued.id])
        assert times[ran.id] == (LATER, later + timedelta(minutes=1))
        assert times.get(queued.id, (None, None)) == (None, None)
        assert store.run_times([]) == {}

    def run(self, store: JobStore, job: Job, start: datetime, end: datetime | None, final: JobState) -> None:
        """Move a queued job through a run that began at `start` (ended at `end` in `final`)."""
        store.transition(job.id, JobState.PLACING, start)
        store.transition(job.id, JobState.PROVISIONING, start)
        store.transition(job.id, JobState.RUNNING, start, kind="running")
        store.record(job.id, start + timedelta(seconds=30), kind="log", message="still running")
        if end is not None:
            store.transition(job.id, final, end)

    def test_run_starts_are_the_latest_move_to_running(self, store: JobStore) -> None:
        """The live wait projection dates a running job from its current run, not its first."""
        again, once, queued = (self.submit_one(store, A, n) for n in ("again", "once", "queued"))
        self.run(store, again, LATER, LATER + timedelta(minutes=1), JobState.PREEMPTED)
        store.transition(again.id, JobState.QUEUED, LATER + timedelta(minutes=1))
        self.run(store, again, LATER + timedelta(minutes=7), None, JobState.RUNNING)
        self.run(store, once, LATER + timedelta(minutes=2), None, JobState.RUNNING)
        starts = store.run_starts([again.id, once.id, queued.id])
        assert starts == {again.id: LATER + timedelta(minutes=7), once.id: LATER + timedelta(minutes=2)}
        assert store.run_starts([]) == {}

    def test_run_starts_of_every_running_job_after_a_restart(self, store: JobStore) -> None:
        """After a restart every running job is asked at once: more ids than one statement may
        bind (PostgreSQL: 65,535; SQLite's default build: 32,766) are read in chunks."""
        jobs = [self.submit_one(store, A, n) for n in ("first", "middle", "last")]
        for minutes, job in enumerate(jobs):
            self.run(store, job, LATER + timedelta(minutes=minutes), None, JobState.RUNNING)
        ids = [JobId(f"j-gone-{i}") for i in range(70_000)]
        ids[0], ids[RUN_STARTS_CHUNK], ids[-1] = (j.id for j in jobs)  # first, next chunk, last
        assert store.run_starts(ids) == {j.id: LATER + timedelta(minutes=m) for m, j in enumerate(jobs)}

    def test_launch_times_are_each_attempts_creation_to_its_jobs_run(self, store: JobStore) -> None:
        """A route's launch times outlive the scheduler that saw them (a restart, a failover):
        from each attempt's creation to its job's move to RUNNING on it, the site's newest first
        read, oldest first given; an attempt that never ran (its job ran on the next) is none."""
        east, west = SiteId("aws-east"), SiteId("ali-bj")
        quick, retried, elsewhere, queued = (self.submit_one(store, A, n) for n in ("q", "r", "e", "w"))
        store.create_attempt(quick.id, east, OFFER, "tok-q", NOW)
        self.run(store, quick, NOW + timedelta(seconds=90), None, JobState.RUNNING)
        store.create_attempt(retried.id, east, OFFER, "tok-r1", NOW + timedelta(seconds=10))  # never came up
        store.create_attempt(retried.id, east, OFFER, "tok-r2", NOW + timedelta(minutes=20))
        self.run(store, retried, NOW + timedelta(minutes=27), None, JobState.RUNNING)
        store.create_attempt(elsewhere.id, west, OFFER, "tok-e", NOW)
        self.run(store, elsewhere, NOW + timedelta(minutes=4), None, JobState.RUNNING)
        store.create_attempt(queued.id, east, OFFER, "tok-w", NOW + timedelta(minutes=30))  # still coming up
        assert store.launch_times(east, 10) == [90.0, 420.0]
        assert store.launch_times(west, 10) == [240.0]
        assert store.launch_times(east, 2) == [420.0]  # the newest two attempts: one still pending
        assert store.launch_times(SiteId("nowhere"), 10) == []

    def test_attempts_created_since_at_the_sites_asked(self, store: JobStore) -> None:
        """`szb status`'s bursts of the last hour outlive a restart: when each attempt started
        at the given sites was created, since a time, oldest first. A launch the site refused
        (no backend id) is no burst: a job failing over from one cloud counted at each."""
        east, west, home = SiteId("aws-east"), SiteId("ali-bj"), SiteId("onprem")
        jobs = [self.submit_one(store, A, n) for n in ("old", "e1", "e2", "w", "h")]

        def started(job_id: JobId, site: SiteId, token: str, at: datetime) -> None:
            attempt = store.create_attempt(job_id, site, OFFER, token, at)
            store.update_attempt(attempt.id, at, backend_id=f"i-{token}")

        started(jobs[0].id, east, "tok-0", NOW - timedelta(hours=2))
        store.create_attempt(jobs[1].id, east, OFFER, "tok-1r", NOW + timedelta(minutes=4))  # refused
        started(jobs[1].id, east, "tok-1", NOW + timedelta(minutes=5))
        started(jobs[2].id, east, "tok-2", NOW + timedelta(minutes=1))
        started(jobs[3].id, west, "tok-3", NOW + timedelta(minutes=3))
        started(jobs[4].id, home, "tok-4", NOW + timedelta(minutes=2))
        got = store.attempt_times([east, west], NOW)
        assert got == [NOW + timedelta(minutes=m) for m in (1, 3, 5)]
        assert store.attempt_times([east], NOW - timedelta(hours=3))[0] == NOW - timedelta(hours=2)
        assert store.attempt_times([], NOW) == []
        # A tenant's `szb status` counts its own bursts only.
        other = self.submit_one(store, B, "b1")
        started(other.id, east, "tok-b", NOW + timedelta(minutes=4))
        assert store.attempt_times([east, west], NOW, B) == [NOW + timedelta(minutes=4)]
        assert store.attempt_times([east, west], NOW, A) == got
        assert len(store.attempt_times([east, west], NOW)) == 4

    def test_recent_runtimes_are_the_tenants_newest_succeeded_runs(self, store: JobStore) -> None:
        """(estimate, actual) of the newest N succeeded runs of one tenant: failures, other
        tenants and older jobs are left out, so the read stays bounded however long the history."""
        jobs = [self.submit_one(store, A, f"ok-{i}") for i in range(5)]
        failed, other = self.submit_one(store, A, "failed"), self.submit_one(store, B, "other")
        for i, job in enumerate(jobs):  # estimate 1 h; job i ran (i + 1) x 30 min
            self.run(store, job, LATER, LATER + timedelta(minutes=30 * (i + 1)), JobState.SUCCEEDED)
        self.run(store, failed, LATER, LATER + timedelta(minutes=1), JobState.FAILED)
        self.run(store, other, LATER, LATER + timedelta(hours=9), JobState.SUCCEEDED)
        assert store.recent_runtimes(A, 3) == [(3600.0, 9000.0), (3600.0, 7200.0), (3600.0, 5400.0)]
        assert len(store.recent_runtimes(A, 100)) == 5
        assert store.recent_runtimes(B, 10) == [(3600.0, 32400.0)]
        assert store.recent_runtimes(TenantId("nobody"), 10) == []

    def test_record_many_sets_the_latest_message(self, store: JobStore) -> None:
        """`szb list` shows why a queued job waits: the message of its latest waiting event."""
        job = self.submit_one(store)
        store.record_many([(job.id, "waiting", "on-prem wait 40 min is within max_wait", {})], LATER)
        assert store.get(job.id).message == "on-prem wait 40 min is within max_wait"
        assert store.get(job.id).state == JobState.QUEUED

    def test_a_spec_changed_by_another_process_is_seen_where_the_old_one_was_read(
        self, open_store: StoreFactory
    ) -> None:
        # Each store caches parsed specs by job id; a reload's lowered priority may be written
        # by another broker process, and a store that read the old spec must see the new one.
        writer, reader = open_store(), open_store()
        job = self.submit_one(writer, A, "lowered")
        assert reader.get(job.id).spec.priority is Priority.NORMAL
        assert reader.list_jobs(A).jobs[0].spec.priority is Priority.NORMAL
        low = job.spec.model_copy(update={"priority": Priority.LOW})
        writer.record(job.id, LATER, kind="priority_lowered", message="lowered", spec=low.model_dump_json())
        assert reader.get(job.id).spec == low
        assert reader.list_jobs(A, states=[JobState.QUEUED]).jobs[0].spec == low

    def test_events_after_and_limit(self, store: JobStore) -> None:
        job = self.submit_one(store)
        for i in range(9):
            store.record(job.id, LATER, kind="note", message=str(i))
        assert [e.seq for e in store.events_after(job.id, 0)] == list(range(1, 11))
        assert [e.seq for e in store.events_after(job.id, 4)] == list(range(5, 11))
        assert [e.seq for e in store.events_after(job.id, 4, limit=3)] == [5, 6, 7]
        assert store.events_after(job.id, 10) == []
        assert store.events_after(JobId("j-missing"), 0) == []

    def test_event_seqs_stay_contiguous_under_concurrent_writers(self, open_store: StoreFactory) -> None:
        stores = [open_store() for _ in range(4)]
        job = self.submit_one(stores[0])
        barrier = threading.Barrier(len(stores))

        def write(i: int, s: JobStore) -> None:
            barrier.wait()
            for n in range(10):
                if n % 2:
                    s.record(job.id, LATER, kind="note", message=f"{i}:{n}")
                else:
                    s.record_many([(job.id, "tick", f"{i}:{n}", {})], LATER)

        threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(stores)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        events = stores[0].events_after(job.id, 0)
        assert [e.seq for e in events] == list(range(1, 42))
        assert len({e.message for e in events[1:]}) == 40

    # attempts ---------------------------------------------------------------------------------

    def test_attempt_lifecycle(self, store: JobStore) -> None:
        job = self.submit_one(store)
        first = store.create_attempt(job.id, SiteId("aws-east"), OFFER, "tok-1", NOW)
        assert (first.id, first.number, first.state, first.backend_id) == (
            f"{job.id}-a1",
            1,
            AttemptState.PENDING,
            None,
        )
        assert store.get_attempt(first.id) == first
        assert store.get(job.id).attempts == 1
        running = store.update_attempt(first.id, LATER, state=AttemptState.RUNNING, backend_id="i-123")
        assert (running.state, running.backend_id, running.updated_at, running.created_at) == (
            AttemptState.RUNNING,
            "i-123",
            LATER,
            NOW,
        )
        failed = store.update_attempt(first.id, LATER, state=AttemptState.FAILED, error="boom")
        assert (failed.state, failed.backend_id, failed.error) == (AttemptState.FAILED, "i-123", "boom")
        assert failed.offer == OFFER
        second = store.create_attempt(job.id, SiteId("ali-bj"), OFFER, "tok-2", LATER)
        assert (second.id, second.number) == (f"{job.id}-a2", 2)
        assert store.attempts_for(job.id) == [failed, second]
        assert store.get(job.id).attempts == 2
        assert store.attempts_for(JobId("j-missing")) == []

    def test_attempt_errors(self, store: JobStore) -> None:
        with pytest.raises(JobNotFoundError):
            store.create_attempt(JobId("j-missing"), SiteId("s"), OFFER, "tok", NOW)
        with pytest.raises(StoreError):
            store.get_attempt("j-missing-a1")
        with pytest.raises(StoreError):
            store.update_attempt(AttemptId("j-missing-a1"), NOW, state=AttemptState.RUNNING)

    def test_a_terminal_attempt_is_never_rewritten(self, store: JobStore) -> None:
        """Issue 11 obs. 5: a reconciler racing a finished attempt must not turn it CANCELLED."""
        job = self.submit_one(store)
        attempt = store.create_attempt(job.id, SiteId("s"), OFFER, "tok-t", NOW)
        store.update_attempt(attempt.id, NOW, state=AttemptState.RUNNING, backend_id="i-1")
        done = store.update_attempt(attempt.id, NOW, state=AttemptState.SUCCEEDED, error="")
        for state in (AttemptState.CANCELLED, AttemptState.LOST, AttemptState.RUNNING):
            again = store.update_attempt(attempt.id, LATER, state=state, error="orphan")
            assert again == done
        assert store.get_attempt(attempt.id) == done
        # Fields other than the state may still be set on it (a late backend id, say).
        assert store.update_attempt(attempt.id, LATER, backend_id="i-2").backend_id == "i-2"

    def test_a_jobs_event_times_never_go_back(self, store: JobStore) -> None:
        """Issue 11 obs. 7: a pass that writes with the time it started at comes after later events."""
        job = self.submit_one(store)
        store.record(job.id, LATER, kind="agent", message="report")
        store.record(job.id, LATER - timedelta(milliseconds=40), kind="waiting", message="late pass")
        store.record_many([(job.id, "waiting", "again", {})], NOW)
        store.transition(job.id, JobState.PLACING, LATER - timedelta(seconds=1), message="placed")
        times = [e.time for e in store.events_after(job.id, 0)]
        assert times == sorted(times) and times[-1] == LATER
        assert [e.time for e in store.events_after(job.id, 1)] == [LATER] * 4

    def test_attempt_keeps_only_its_secret_hash(self, store: JobStore) -> None:
        job = self.submit_one(store)
        first = store.create_attempt(job.id, SiteId("s"), OFFER, "tok-1", NOW, secret_hash="ab" * 32)
        assert store.get_attempt(first.id).secret_hash == "ab" * 32
        rotated = store.update_attempt(first.id, LATER, secret_hash="cd" * 32)
        assert rotated.secret_hash == "cd" * 32 and rotated.token == "tok-1"
        assert store.get_attempt(first.id) == rotated
        assert "cd" * 32 not in repr(rotated)  # never in logs by accident

    def test_attempt_end_and_job_moves_are_one_transaction(self, store: JobStore) -> None:
        job = self.submit_one(store)
        for state in (JobState.PLACING, JobState.PROVISIONING):
            store.transition(job.id, state, NOW)
        attempt = store.create_attempt(job.id, SiteId("s"), OFFER, "tok-1", NOW)
        running = JobMove(JobState.RUNNING, "running", "running on s", expect=JobState.PROVISIONING)
        store.update_attempt(attempt.id, NOW, state=AttemptState.RUNNING, moves=[running])
        assert store.get(job.id).state == JobState.RUNNING
        events = len(store.events_after(job.id, 0))
        # A job move the database refuses (an exit code no column holds) undoes the attempt's end.
        huge = JobMove(JobState.FAILED, "finished", "exit code huge", fields={"exit_code": 10**30})
        with pytest.raises(Exception):  # noqa: B017 (each driver raises its own overflow error)
            store.update_attempt(attempt.id, LATER, state=AttemptState.FAILED, moves=[huge])
        assert store.get_attempt(attempt.id).state == AttemptState.RUNNING
        assert store.get(job.id).state == JobState.RUNNING
        assert len(store.events_after(job.id, 0)) == events
        # An illegal move undoes it too.
        with pytest.raises(IllegalTransitionError):
            store.update_attempt(
                attempt.id, LATER, state=AttemptState.FAILED, moves=[JobMove(JobState.PLACING, "bad")]
            )
        assert store.get_attempt(attempt.id).state == AttemptState.RUNNING
        done = JobMove(JobState.FAILED, "finished", "exit code 7", fields={"exit_code": 7, "log_tail": "x"})
        ended = store.update_attempt(attempt.id, LATER, state=AttemptState.FAILED, moves=[done])
        job_now = store.get(job.id)
        assert (ended.state, job_now.state, job_now.exit_code) == (AttemptState.FAILED, JobState.FAILED, 7)
        # Once the job is terminal, further moves are skipped, not errors.
        store.update_attempt(attempt.id, LATER, error="late", moves=[JobMove(JobState.QUEUED, "lost")])
        assert store.get(job.id).state == JobState.FAILED

    def test_a_moves_at_is_its_events_time(self, store: JobStore) -> None:
        """A job that ran and ended between two polls: its RUNNING move, written with its end in
        one update, is dated when the backend says it started; the end is dated `now`, after it."""
        job = self.submit_one(store)
        for state in (JobState.PLACING, JobState.PROVISIONING):
            store.transition(job.id, state, NOW)
        attempt = store.create_attempt(job.id, SiteId("s"), OFFER, "tok-1", NOW)
        started = NOW + timedelta(seconds=90)
        moves = [
            JobMove(JobState.RUNNING, "running", "running on s", expect=JobState.PROVISIONING, at=started),
            JobMove(JobState.SUCCEEDED, "finished", "exit code 0", fields={"exit_code": 0}),
        ]
        store.update_attempt(attempt.id, LATER, state=AttemptState.SUCCEEDED, moves=moves)
        events = store.events_after(job.id, 0)
        assert [(e.state, e.time) for e in events[-2:]] == [
            (JobState.RUNNING, started),
            (JobState.SUCCEEDED, LATER),
        ]
        assert events[-2].seq + 1 == events[-1].seq
        assert store.run_times([job.id]) == {job.id: (started, LATER)}
        assert store.run_starts([job.id]) == {job.id: started}
        assert store.get(job.id).updated_at == LATER  # the row is as of the update, not the start
        # A move never dates its event before the job's previous one.
        other = self.submit_one(store, A, "other")
        store.transition(other.id, JobState.PLACING, LATER)
        early = JobMove(JobState.PROVISIONING, "attempt", at=NOW)
        other_attempt = store.create_attempt(other.id, SiteId("s"), OFFER, "tok-2", LATER)
        store.update_attempt(other_attempt.id, LATER, moves=[early])
        assert store.events_after(other.id, 0)[-1].time == LATER

    def test_live_attempts_are_pending_or_running(self, store: JobStore) -> None:
        jobs = [self.submit_one(store, A, f"j{i}") for i in range(4)]
        attempts = [
            store.create_attempt(j.id, SiteId("s"), OFFER, f"tok-{i}", NOW) for i, j in enumerate(jobs)
        ]
        store.update_attempt(attempts[1].id, LATER, state=AttemptState.RUNNING)
        store.update_attempt(attempts[2].id, LATER, state=AttemptState.SUCCEEDED)
        store.update_attempt(attempts[3].id, LATER, state=AttemptState.LOST)
        live = store.live_attempts()
        assert [(a.id, a.state) for a in live] == [
            (attempts[0].id, AttemptState.PENDING),
            (attempts[1].id, AttemptState.RUNNING),
        ]

    # money ------------------------------------------------------------------------------------

    def test_reserve_spend_respects_tenant_and_global_limits(self, store: JobStore) -> None:
        assert store.reserve_spend(entry("j1-a1", 60), tenant_limit=100, global_limit=150)
        assert not store.reserve_spend(entry("j2-a1", 41), tenant_limit=100, global_limit=None)
        assert store.reserve_spend(entry("j2-a1", 40), tenant_limit=100, global_limit=None)  # exactly full
        assert store.reserve_spend(entry("j3-a1", 50, tenant=B), tenant_limit=100, global_limit=150)
        assert not store.reserve_spend(entry("j4-a1", 0.5, tenant=B), tenant_limit=100, global_limit=150)
        assert store.reserve_spend(entry("j4-a1", 0.5, tenant=B), tenant_limit=100, global_limit=None)
        assert store.reserve_spend(entry("j5-a1", 1e6), tenant_limit=None, global_limit=None)
        # Other months are separate.
        assert store.reserve_spend(entry("j6-a1", 100, month="2026-12"), tenant_limit=100, global_limit=100)
        assert sorted(e.attempt_id for e in store.spend_entries("2026-11")) == [
            "j1-a1",
            "j2-a1",
            "j3-a1",
            "j4-a1",
            "j5-a1",
        ]

    def test_settle_spend_counts_actual_cash(self, store: JobStore) -> None:
        assert store.reserve_spend(entry("j1-a1", 80), tenant_limit=100, global_limit=None)
        assert not store.reserve_spend(entry("j2-a1", 30), tenant_limit=100, global_limit=None)
        store.settle_spend(AttemptId("j1-a1"), spent=10.0, voucher=70.0)
        [settled] = store.spend_entries("2026-11")
        assert (settled.settled, settled.spent, settled.voucher, settled.reserved) == (True, 10.0, 70.0, 80)
        assert store.reserve_spend(entry("j2-a1", 90), tenant_limit=100, global_limit=None)
        assert not store.reserve_spend(entry("j3-a1", 0.01), tenant_limit=100, global_limit=None)
        store.settle_spend(AttemptId("j-missing-a1"), spent=1.0, voucher=0.0)  # no-op

    def test_reserve_spend_replaces_an_attempts_entry(self, store: JobStore) -> None:
        assert store.reserve_spend(entry("j1-a1", 30), tenant_limit=100, global_limit=None)
        voucher = SpendEntry(
            tenant=A,
            site=SiteId("ali-bj"),
            job_id=JobId("j1"),
            attempt_id=AttemptId("j1-a1"),
            month="2026-11",
            reserved=50,
            voucher=5.0,
            voucher_id="v-1",
        )
        assert store.reserve_spend(voucher, tenant_limit=100, global_limit=None)
        assert store.spend_entries("2026-11") == [voucher]

    def test_spend_entries_filter_by_month_and_tenant(self, store: JobStore) -> None:
        a, b = entry("j1-a1", 1), entry("j2-a1", 2, tenant=B)
        other_month = entry("j3-a1", 3, month="2026-10")
        for e in (a, b, other_month):
            assert store.reserve_spend(e, tenant_limit=None, global_limit=None)
        assert sorted(store.spend_entries("2026-11"), key=lambda e: e.attempt_id) == [a, b]
        assert store.spend_entries("2026-11", A) == [a]
        assert store.spend_entries("2026-11", B) == [b]
        assert store.spend_entries("2026-10") == [other_month]
        assert store.spend_entries("2026-09") == []

    def test_unsettled_spend_is_every_open_entry_of_every_month_and_tenant(self, store: JobStore) -> None:
        a, b, done = entry("j1-a1", 1), entry("j2-a1", 2, tenant=B, month="2026-10"), entry("j3-a1", 3)
        for e in (a, b, done):
            assert store.reserve_spend(e, tenant_limit=None, global_limit=None)
        store.settle_spend(AttemptId("j3-a1"), spent=1.0, voucher=0.0)
        assert sorted(store.unsettled_spend(), key=lambda e: e.attempt_id) == [a, b]

    def test_a_reservation_keeps_the_exchange_rate_it_was_made_at(self, store: JobStore) -> None:
        usd = replace(entry("j1-a1", 72.0), fx=7.2)
        assert store.reserve_spend(usd, tenant_limit=None, global_limit=None)
        store.settle_spend(AttemptId("j1-a1"), spent=1.0, voucher=0.0)
        [settled] = store.spend_entries("2026-11")
        assert settled.fx == 7.2 and settled.settled and settled.spent == 1.0

    def test_raise_reservations_grows_open_entries_only(self, store: JobStore) -> None:
        usd = replace(entry("j1-a1", 7.2), fx=7.2, voucher=1.0, voucher_id="v-1")  # 1 USD at 7.2, 1.0 voucher
        old = entry("j2-a1", 5.0)  # reserved before rates were kept: the rate given is used
        done = entry("j3-a1", 5.0)
        other = replace(entry("j4-a1", 0.0), voucher=3.0, voucher_id="v-1")  # the voucher's other draw
        whole = replace(entry("j5-a1", 0.0), voucher=2.0, voucher_id="v-2")  # a voucher paying it all
        for e in (usd, old, done, other, whole):
            assert store.reserve_spend(e, tenant_limit=None, global_limit=None)
        store.settle_spend(AttemptId("j3-a1"), spent=2.0, voucher=0.0)
        asked: dict[str, tuple[float, float]] = {}

        def split(e: SpendEntry, total: float, drawn: Mapping[str, float]) -> tuple[float, Draws]:
            others = drawn.get(e.voucher_id or "", 0.0)
            asked[e.attempt_id] = (total, others)
            if e.voucher_id == "v-2":
                return 0.0, (("v-2", total),)
            paid = min(total / 2, 10.0 - others) if e.voucher_id else 0.0  # half, of a 10.0 balance
            return total - paid, ((e.voucher_id, paid),) if e.voucher_id else ()

        costs = [("j1-a1", 3.0, 1.0), ("j2-a1", 2.0, 2.0), ("j3-a1", 9.0, 1.0), ("j5-a1", 5.0, 1.0)]
        store.raise_reservations([(AttemptId(a), cost, rate) for a, cost, rate in costs], split)
        # Its own rate; what the other entry drew of its voucher. Not asked: the settled one.
        assert asked == {"j1-a1": (pytest.approx(3.0 * 7.2), 3.0), "j2-a1": (4.0, 0.0), "j5-a1": (5.0, 0.0)}
        got = {e.attempt_id: e for e in store.spend_entries("2026-11")}
        # 21.6 so far: the voucher pays the 7.0 left of it (not its half, 10.8), the rest is cash.
        assert (got["j1-a1"].reserved, got["j1-a1"].voucher) == (pytest.approx(21.6 - 7.0), 7.0)
        assert got["j2-a1"].reserved == 5.0  # 2.0 x 2.0 is less than it reserved: never lowered
        assert (got["j3-a1"].reserved, got["j3-a1"].spent, got["j3-a1"].settled) == (5.0, 2.0, True)
        assert got["j4-a1"] == other
        assert (got["j5-a1"].reserved, got["j5-a1"].voucher) == (0.0, 5.0)  # its voucher's draw grows
        store.raise_reservations([], split)

    def test_a_spend_table_from_before_exchange_rates_gains_the_column(
        self, open_store: StoreFactory
    ) -> None:
        old = open_store()
        assert old.reserve_spend(entry("j1-a1", 5), tenant_limit=None, global_limit=None)
        self.raw(old, "ALTER TABLE spend DROP COLUMN fx")  # as a store before the column was
        self.raw(old, "DELETE FROM schema_version")  # ... written by a broker of then
        store = open_store()  # opening brings the schema up to date
        assert store.spend_entries("2026-11") == [entry("j1-a1", 5)]  # its rate unknown: None
        usd = replace(entry("j2-a1", 7.2), fx=7.2)
        assert store.reserve_spend(usd, tenant_limit=None, global_limit=None)
        assert store.spend_entries("2026-11") == [entry("j1-a1", 5), usd]

    def test_a_run_across_a_months_end_counts_in_each_month_for_its_part(self, store: JobStore) -> None:
        # Held-out review of issue 6: spend was filed under the attempt's month only, so a burst
        # from Nov 30 23:00 to Dec 1 02:00 (Beijing) charged all of it to November, and December's
        # budget let another burst through on money its own hours had already used.
        start = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)  # 23:00 Beijing
        across = replace(entry("j1-a1", 30), started=start, ends=start + timedelta(hours=3))
        december = entry("j2-a1", 85, month="2026-12")
        assert store.reserve_spend(december, tenant_limit=100, global_limit=None)
        # December already holds 85: the run's 20 there would take it to 105.
        assert not store.reserve_spend(across, tenant_limit=100, global_limit=None)
        assert not store.reserve_spend(across, tenant_limit=None, global_limit=100)
        assert store.reserve_spend(across, tenant_limit=105, global_limit=None)
        [(nov, part)] = [(e, e.in_month("2026-11")) for e in store.spend_entries("2026-11")]
        assert nov == across and part == pytest.approx(1 / 3)
        got = {e.attempt_id: e.in_month("2026-12") for e in store.spend_entries("2026-12")}
        assert got == {"j1-a1": pytest.approx(2 / 3), "j2-a1": 1.0}
        assert store.spend_entries("2027-01") == []
        # It ran one hour past its estimate: settled, its run is what it really was.
        store.settle_spend(AttemptId("j1-a1"), spent=40.0, voucher=0.0, ended=start + timedelta(hours=4))
        [done] = [e for e in store.spend_entries("2026-12") if e.attempt_id == "j1-a1"]
        assert done.settled and done.ends == start + timedelta(hours=4)
        parts = (done.in_month("2026-11"), done.in_month("2026-12"))
        assert parts == (pytest.approx(1 / 4), pytest.approx(3 / 4))

    def test_a_reservation_raised_past_its_estimate_runs_into_the_next_month(self, store: JobStore) -> None:
        start = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # 20:00 Beijing, estimated to 22:00
        assert store.reserve_spend(
            replace(entry("j1-a1", 20), started=start, ends=start + timedelta(hours=2)),
            tenant_limit=None, global_limit=None,
        )
        assert [e.attempt_id for e in store.spend_entries("2026-12")] == []
        now = start + timedelta(hours=8)  # 04:00 Beijing, Dec 1: it has run 8 h
        store.raise_reservations([(AttemptId("j1-a1"), 80.0, 1.0)], lambda e, total, _: (total, ()), now)
        [e] = store.spend_entries("2026-12")
        assert (e.reserved, e.ends) == (80.0, now)
        assert e.in_month("2026-11") == pytest.approx(0.5) and e.in_month("2026-12") == pytest.approx(0.5)

    def test_spend_from_before_runs_were_kept_stays_in_its_month(self, open_store: StoreFactory) -> None:
        old = open_store()
        assert old.reserve_spend(entry("j1-a1", 5), tenant_limit=None, global_limit=None)
        self.raw(old, "DROP INDEX spend_ends")  # as a store before the columns were
        self.raw(old, "ALTER TABLE spend DROP COLUMN started")
        self.raw(old, "ALTER TABLE spend DROP COLUMN ends")
        self.raw(old, "UPDATE schema_version SET fingerprint = 'older'")  # ... written by a broker of then
        store = open_store()  # opening brings the schema up to date
        [e] = store.spend_entries("2026-11")
        assert e == entry("j1-a1", 5) and e.in_month("2026-11") == 1.0 and e.in_month("2026-12") == 0.0
        assert store.spend_entries("2026-12") == []
        assert not store.reserve_spend(entry("j2-a1", 96), tenant_limit=100, global_limit=None)

    def test_jobs_from_before_queue_keys_are_ranked_and_grouped_from_their_spec(
        self, open_store: StoreFactory
    ) -> None:
        old = open_store()
        ids = {}
        for name, priority in (("n", Priority.NORMAL), ("l", Priority.LOW), ("h", Priority.HIGH)):
            item = Submission(spec(name).model_copy(update={"priority": priority}))
            [(job, _)] = old.submit(A, [item], NOW)
            ids[name] = job.id
        self.raw(old, "DROP INDEX jobs_queue_groups")
        self.raw(old, "ALTER TABLE jobs DROP COLUMN priority_rank")  # as a store before the columns
        self.raw(old, "ALTER TABLE jobs DROP COLUMN queue_group")
        # ... with the index a broker of stop 47's first commit made under the name kept today.
        self.raw(old, "CREATE INDEX jobs_queue_heads ON jobs(state, tenant, id)")
        self.raw(old, "UPDATE schema_version SET fingerprint = 'older'")  # ... written by a broker of then
        store = open_store()  # opening brings the schema up to date (no row read: a quick open)
        assert store.queue_groups(A, 10) == [""]
        assert store.fill_queue_keys(A, 2) == 2 and store.fill_queue_keys(A, 10) == 1  # a pass's work
        [group] = store.queue_groups(A, 10)
        assert [j.id for j in store.queue_head(A, group, page_size=10).jobs] == [ids["h"], ids["n"], ids["l"]]
        assert not self.raw(store, self.INDEX_NAMED, ("jobs_queue_heads",))  # the old shape is gone

    def test_jobs_an_older_broker_submits_beside_a_current_one_are_keyed(self, store: JobStore) -> None:
        item = Submission(spec("h").model_copy(update={"priority": Priority.HIGH}))
        [(high, _)] = store.submit(A, [item], NOW)
        [(normal, _)] = store.submit(A, [Submission(spec("n"))], NOW)
        # An older replica, still running, inserts rows without the columns (their defaults).
        self.raw(store, "UPDATE jobs SET priority_rank = 1, queue_group = ''")
        assert store.queue_groups(A, 10) == [""] and store.fill_queue_keys(A, 10) == 2
        [group] = store.queue_groups(A, 10)
        assert group != "" and [j.id for j in store.queue_head(A, group, page_size=5).jobs] == [
            high.id, normal.id]
        assert store.fill_queue_keys(A, 10) == 0

    def test_an_unreadable_spec_does_not_stop_the_store_opening_to_key_the_rest(
        self, open_store: StoreFactory
    ) -> None:
        store = open_store()
        [(good, _)] = store.submit(A, [Submission(spec("good"))], NOW)
        [(nul, _)] = store.submit(A, [Submission(spec("nul", note="x"))], NOW)
        [(bad, _)] = store.submit(A, [Submission(spec("bad"))], NOW)
        self.raw(store, "UPDATE jobs SET priority_rank = 1, queue_group = ''")
        # A label value with an escaped NUL (stored before labels refused control characters; a
        # PostgreSQL json cast refuses it), and a spec that no longer reads at all.
        text = nul.spec.model_dump_json().replace('"x"', '"a\\u0000b"')
        self.raw(store, "UPDATE jobs SET spec = ? WHERE id = ?", (text, nul.id))
        self.raw(store, "UPDATE jobs SET spec = ? WHERE id = ?", ('{"name": "bad"}', bad.id))
        self.raw(store, "UPDATE schema_version SET fingerprint = 'older'")
        reopened = open_store()
        assert reopened.fill_queue_keys(A, 10) == 2
        groups = reopened.queue_groups(A, 10)
        assert groups[0] == "" and len(groups) == 2, groups  # the bad one: as it was
        assert [j.id for j in reopened.queue_head(A, groups[1], page_size=5).jobs] == [good.id, nul.id]
        assert [j.id for j in reopened.queue_head(A, "", page_size=5).jobs] == []  # quarantined as read
        assert reopened.get(bad.id).state == JobState.FAILED

    def test_reclaim_bookings_from_before_free_units_were_kept_gain_the_column(
        self, open_store: StoreFactory
    ) -> None:
        old = open_store()
        booked = ReclaimBooking("a-1", "lab/a800", 2, "j-owner", 1.5e9, 1.5e9 + 200.5, False)
        old.save_reclaim_state(ReclaimState({}, (booked,)))
        self.raw(old, "ALTER TABLE reclaim_booked DROP COLUMN beside")  # as a store before it was
        self.raw(old, "UPDATE schema_version SET fingerprint = 'older'")  # ... written by a broker of then
        store = open_store()  # opening brings the schema up to date
        assert store.load_reclaim_state().bookings == (booked,)  # none kept beside it: 0
        kept = replace(booked, beside=1)
        store.save_reclaim_state(ReclaimState({}, (kept,)))
        assert store.load_reclaim_state().bookings == (kept,)

    def test_a_reservation_draws_only_what_other_entries_left_of_a_voucher(self, store: JobStore) -> None:
        def drawing(attempt: str, cash: float, voucher: float, month: str = "2026-11") -> SpendEntry:
            return replace(entry(attempt, cash, month=month), voucher=voucher, voucher_id="v-1")

        # 10 of the voucher's 12 drawn: 6 settled last month, 4 held by an open reservation.
        assert store.reserve_spend(
            drawing("j1-a1", 0, 6, month="2026-10"), tenant_limit=None, global_limit=None
        )
        assert store.reserve_spend(drawing("j2-a1", 1, 4), tenant_limit=None, global_limit=None)
        # Decided on a balance that no longer holds: 3 from the voucher, only 2 are left.
        assert store.reserve_spend(
            drawing("j3-a1", 1, 3), tenant_limit=3, global_limit=None, voucher_balances={"v-1": 12}
        )
        got = {e.attempt_id: e for e in store.spend_entries("2026-11")}[AttemptId("j3-a1")]
        assert (got.reserved, got.voucher) == (2.0, 2.0)
        assert store.voucher_used(A) == {"v-1": 12.0}
        # Nothing is left: all 3 would be cash, and 1 + 2 + 3 is over a budget of 5.
        assert not store.reserve_spend(
            drawing("j4-a1", 0, 3), tenant_limit=5, global_limit=None, voucher_balances={"v-1": 12}
        )
        # Reserving an attempt again does not count its own earlier draw against it.
        assert store.reserve_spend(
            drawing("j3-a1", 1, 3), tenant_limit=None, global_limit=None, voucher_balances={"v-1": 15}
        )
        got = {e.attempt_id: e for e in store.spend_entries("2026-11")}[AttemptId("j3-a1")]
        assert (got.reserved, got.voucher) == (1.0, 3.0)

    def test_voucher_used_sums_every_month_per_voucher(self, store: JobStore) -> None:
        def drawn(attempt: str, month: str, amount: float, voucher: str | None, tenant: TenantId = A) -> None:
            e = replace(entry(attempt, 1, month=month, tenant=tenant), voucher=amount, voucher_id=voucher)
            assert store.reserve_spend(e, tenant_limit=None, global_limit=None)

        drawn("j1-a1", "2026-10", 30.0, "v-1")
        drawn("j2-a1", "2026-11", 5.0, "v-1")
        drawn("j3-a1", "2026-11", 2.0, "v-2")
        drawn("j4-a1", "2026-11", 0.0, None)
        drawn("j5-a1", "2026-11", 9.0, "v-1", tenant=B)
        store.settle_spend(AttemptId("j2-a1"), spent=1.0, voucher=7.0)
        assert store.voucher_used(A) == {"v-1": 37.0, "v-2": 2.0}
        assert store.voucher_used(B) == {"v-1": 9.0}

    def test_a_burst_drawing_on_two_vouchers_keeps_each_ones_draw(self, store: JobStore) -> None:
        # 10 of v-1's 12 held elsewhere: of a draw of 4 from v-1 and 3 from v-2, v-1 pays 2 and
        # the other 2 are cash; v-2 (balance 20) pays its 3.
        held = replace(entry("j1-a1", 0), voucher=10.0, voucher_id="v-1")
        assert store.reserve_spend(held, tenant_limit=None, global_limit=None)
        both = replace(entry("j2-a1", 1), voucher=7.0, voucher_id="v-1", draws=(("v-1", 4.0), ("v-2", 3.0)))
        balances = {"v-1": 12.0, "v-2": 20.0}
        assert store.reserve_spend(both, tenant_limit=None, global_limit=None, voucher_balances=balances)
        got = {e.attempt_id: e for e in store.spend_entries("2026-11")}[AttemptId("j2-a1")]
        assert (got.reserved, got.voucher, got.voucher_id) == (3.0, 5.0, "v-1")
        assert got.draws == (("v-1", 2.0), ("v-2", 3.0))
        assert store.voucher_used(A) == {"v-1": 12.0, "v-2": 3.0}
        store.settle_spend(AttemptId("j2-a1"), spent=4.0, voucher=6.0, draws=(("v-1", 2.0), ("v-2", 4.0)))
        [settled] = [e for e in store.spend_entries("2026-11", A) if e.attempt_id == "j2-a1"]
        assert (settled.spent, settled.voucher, settled.draws) == (4.0, 6.0, (("v-1", 2.0), ("v-2", 4.0)))
        assert store.voucher_used(A) == {"v-1": 12.0, "v-2": 4.0}
        assert store.unsettled_spend() == [held]

    def test_voucher_draws_from_before_several_vouchers_count(self, open_store: StoreFactory) -> None:
        old = open_store()
        drawn = replace(entry("j1-a1", 1), voucher=6.0, voucher_id="v-1")
        assert old.reserve_spend(drawn, tenant_limit=None, global_limit=None)
        self.raw(old, "DROP TABLE spend_draws")  # as a store before a burst drew on several vouchers
        self.raw(old, "DELETE FROM schema_version")  # ... written by a broker of then
        store = open_store()  # opening brings the schema up to date
        assert store.voucher_used(A) == {"v-1": 6.0}
        assert store.spend_entries("2026-11") == [drawn]

    @pytest.mark.parametrize("round_", range(3))
    def test_concurrent_reservations_never_exceed_limits(self, open_store: StoreFactory, round_: int) -> None:
        stores = [open_store() for _ in range(4)]
        costs = [7.0 + (i * 13 + round_ * 5) % 11 for i in range(32)]
        tenant_limit, global_limit = 90.0, 150.0
        barrier = threading.Barrier(len(costs))
        errors: list[BaseException] = []

        def burst(i: int) -> None:
            tenant = A if i % 2 else B
            barrier.wait()
            try:
                stores[i % len(stores)].reserve_spend(
                    entry(f"j{i}-a1", costs[i], tenant=tenant),
                    tenant_limit=tenant_limit,
                    global_limit=global_limit,
                )
                if i % 5 == 0:  # settling at the same time must not let anyone overspend
                    stores[i % len(stores)].settle_spend(AttemptId(f"j{i}-a1"), costs[i], 0.0)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=burst, args=(i,)) for i in range(len(costs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        entries = stores[0].spend_entries("2026-11")
        for tenant in (A, B):
            assert sum(e.reserved for e in entries if e.tenant == tenant) <= tenant_limit + 1e-6
        assert sum(e.reserved for e in entries) <= global_limit + 1e-6
        # Everything that fitted was taken: the limits are nearly used up, not left idle.
        assert sum(e.reserved for e in entries) > global_limit - 2 * max(costs)

    # durability -------------------------------------------------------------------------------

    def test_state_survives_reopening(self, open_store: StoreFactory) -> None:
        first = open_store()
        job = self.submit_one(first, A, "keep", team="x")
        first.transition(job.id, JobState.PLACING, LATER)
        attempt = first.create_attempt(job.id, SiteId("s"), OFFER, "tok", LATER)
        assert first.reserve_spend(entry(f"{job.id}-a1", 5), tenant_limit=None, global_limit=None)
        first.close()
        second = open_store()
        assert second.get(job.id, A).state is JobState.PLACING
        assert second.list_jobs(A, labels={"team": "x"}).jobs[0].id == job.id
        assert second.get_attempt(attempt.id) == attempt
        assert len(second.events_after(job.id, 0)) == 2
        assert len(second.spend_entries("2026-11", A)) == 1

    # Audit trail --------------------------------------------------------------------------

    def test_policy_versions_keep_every_load_and_refusal(self, open_store: StoreFactory) -> None:
        store = open_store()
        good = PolicyVersion("ab" * 32, "loaded", "/etc/szb/policy.yaml", "version: 1\n", NOW)
        bad = PolicyVersion(
            "cd" * 32,
            "refused",
            "/etc/szb/policy.yaml",
            "version: [\n",
            LATER,
            ("/etc/szb/policy.yaml:1:10: error: bad",),
        )
        store.record_policy_version(good)
        store.record_policy_version(bad)
        second = open_store()  # another connection (another broker) sees the same history
        assert second.policy_versions() == [bad, good]
        assert second.policy_versions(limit=1) == [bad]
        assert second.find_policy_version("abab") == good
        assert second.find_policy_version("cd" * 32) == bad
        assert second.find_policy_version("ef") is None
        assert second.policy_hashes("", 5) == ["ab" * 32, "cd" * 32]  # each once, by hash
        assert second.policy_hashes("cdcd", 5) == ["cd" * 32] and second.policy_hashes("ef", 5) == []

    def test_a_version_keeps_the_files_it_refers_to_and_old_entries_still_read(
        self, open_store: StoreFactory
    ) -> None:
        """Review (issues 3 and 12): the files a policy refers to decide too (an accelerators.yaml
        edit alone turned an export refusal into a placement), so a version keeps their texts;
        an entry stored before the column was reads with none."""
        old = open_store()
        before = PolicyVersion("ab" * 32, "loaded", "/etc/szb/policy.yaml", "version: 1\n", NOW, (), "d1")
        old.record_policy_version(before)
        self.raw(old, "ALTER TABLE policy_versions DROP COLUMN files")  # as a store before the column was
        self.raw(old, "DELETE FROM schema_version")  # ... written by a broker of then
        store = open_store()  # opening brings the schema up to date
        files = (("accelerators.yaml", "accelerators:\n  - name: H100 \u2713\n"), ("bundled:x.yaml", ""))
        now = PolicyVersion("cd" * 32, "loaded", "/etc/szb/policy.yaml", "v: 1\n", LATER, (), "d2", files)
        store.record_policy_version(now)
        assert store.policy_versions() == [now, before]
        assert store.find_policy_version("cdcd") == now and store.find_policy_version("abab") == before

    def test_a_load_the_newest_entry_says_already_is_not_kept_twice(self, open_store: StoreFactory) -> None:
        """In HA each broker process loads the policy file and recorded it: `szb policy history`
        listed every reload once per process (and once per restart of an unchanged file)."""
        first, second = open_store(), open_store()
        good = PolicyVersion("ab" * 32, "loaded", "/etc/szb/policy.yaml", "version: 1\n", NOW)
        first.record_policy_version(good)
        second.record_policy_version(replace(good, time=LATER))  # the other process, a moment later
        assert first.policy_versions() == [good]
        bad = PolicyVersion("cd" * 32, "refused", "/etc/szb/policy.yaml", "version: [\n", LATER, ("x",))
        for store in (first, second):
            store.record_policy_version(bad)
        second.record_policy_version(replace(good, time=LATER))  # back to the first: a change again
        assert [v.result for v in first.policy_versions()] == ["loaded", "refused", "loaded"]
        first.record_policy_version(replace(good, inputs="ef" * 32))  # its catalog edited: a change
        assert first.policy_versions()[0].inputs == "ef" * 32 and len(second.policy_versions()) == 4

    def test_processes_loading_one_file_at_once_leave_one_entry(self, open_store: StoreFactory) -> None:
        """Review: on PostgreSQL `INSERT ... WHERE NOT EXISTS` takes no lock under READ COMMITTED:
        four processes recording one load together left two entries or more in 26 of 50 trials."""
        stores = [open_store() for _ in range(4)]
        for trial in range(10):
            version = PolicyVersion(f"{trial:064x}", "loaded", "/etc/szb/policy.yaml", "version: 1\n", NOW)
            go = threading.Barrier(len(stores))

            def record(store: JobStore, version: PolicyVersion = version, go: threading.Barrier = go) -> None:
                go.wait()
                store.record_policy_version(version)

            threads = [threading.Thread(target=record, args=(s,)) for s in stores]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert [v.hash for v in stores[0].policy_versions(50)].count(version.hash) == 1, trial

    def test_find_policy_version_prefers_a_loaded_copy(self, store: JobStore) -> None:
        h = "0f" * 32
        store.record_policy_version(PolicyVersion(h, "loaded", "p.yaml", "a", NOW))
        store.record_policy_version(PolicyVersion(h, "unchanged", "p.yaml", "a", LATER))
        store.record_policy_version(PolicyVersion(h, "refused", "p.yaml", "a", LATER, ("x",)))
        found = store.find_policy_version("0f0f")
        assert found is not None and found.result == "unchanged"

    def test_audit_events_filter_by_job_tenant_and_time(self, store: JobStore) -> None:
        a = self.submit_one(store, A)
        b = self.submit_one(store, B)
        store.transition(
            a.id, JobState.PLACING, LATER, kind="placed", data={"policy_hash": "ab", "price_per_hour": 2.5}
        )
        store.transition(b.id, JobState.CANCELLED, LATER, kind="cancelled", data={"by": "ops"})
        store.record(a.id, LATER, kind="waiting", message="not audited")
        everything = store.audit_events(AuditFilter())
        # Oldest first; events at the same time in job id (= submission) order.
        assert [(t, e.kind) for t, e in everything] == [
            (A, "submitted"),
            (B, "submitted"),
            (A, "placed"),
            (B, "cancelled"),
        ]
        assert [e.kind for _, e in store.audit_events(AuditFilter(job_id=a.id))] == ["submitted", "placed"]
        mine = store.audit_events(AuditFilter(tenant=B))
        assert [e.kind for _, e in mine] == ["submitted", "cancelled"]
        assert mine[1][1].data == {"by": "ops"}
        recent = store.audit_events(AuditFilter(since=LATER))
        assert sorted(e.kind for _, e in recent) == ["cancelled", "placed"]
        newest = store.audit_events(AuditFilter(limit=1))
        assert len(newest) == 1 and newest[0][1].time == LATER

    def test_audit_pages_follow_one_another_through_equal_times(self, store: JobStore) -> None:
        """Paging by the oldest entry shown (`AuditFilter.after`) reads jobs' events and refusals
        that share one time each once, in one order; `until` keeps what is before it."""
        jobs = [self.submit_one(store, A) for _ in range(3)]
        for job in jobs:
            store.transition(job.id, JobState.CANCELLED, LATER, kind="cancelled", data={"by": "ops"})
        store.record_refusals([
            RefusedSubmission(at, B, "", "tenant", f"r{i}", f"refused r{i}", (), "h", "{}")
            for i, at in enumerate([NOW, NOW, LATER, LATER, LATER])
        ])

        def both(where: AuditFilter) -> list[tuple[Any, ...]]:
            merged = [(e.time, EVENT, e.job_id, e.seq, e.kind) for _, e in store.audit_events(where)]
            merged += [(r.time, REFUSAL, "", r.id, r.message) for r in store.refusals(where)]
            return sorted(merged)[-where.limit:]

        whole = both(AuditFilter(limit=100))
        assert len(whole) == 11
        pages, after = [], None
        while True:
            page = both(AuditFilter(limit=2, after=after))
            if not page:
                break
            pages = page + pages
            after = AuditCursor(*page[0][:4])
        assert pages == whole
        # At one time a job's events are newer than a refusal.
        assert [row[4] for row in both(AuditFilter(limit=100, until=LATER))] == [
            "refused r0", "refused r1", "submitted", "submitted", "submitted"
        ]

    def test_refused_submissions_are_kept_filtered_and_bounded(
        self, store: JobStore, open_store: StoreFactory
    ) -> None:
        """A submission refused by policy has no job: its own table, read with the audit trail's
        filters (never by job id), each tenant's newest `keep` only, whoever floods."""

        def refusal(tenant: TenantId, name: str, at: datetime) -> RefusedSubmission:
            return RefusedSubmission(
                time=at, tenant=tenant, by="dave", role="tenant", job_name=name,
                message=f"job {name!r} refused: no allowed offer: export-x: not here",
                rules=("export-x", "hardware.fit"), policy_hash="ab" * 32, spec=f'{{"name": "{name}"}}',
            )

        store.record_refusals([refusal(B, "theirs", NOW)], keep=3)
        store.record_refusals([refusal(A, f"j{i}", NOW + timedelta(seconds=i)) for i in range(4)], keep=3)
        store.record_refusals([refusal(A, "j4", NOW + timedelta(seconds=4))], keep=3)
        mine = store.refusals(AuditFilter(tenant=A))
        assert [r.job_name for r in mine] == ["j2", "j3", "j4"]  # oldest first, the newest 3 kept
        assert mine[0] == refusal(A, "j2", NOW + timedelta(seconds=2))
        # Another connection (a restart, a second broker) reads the same record.
        again = open_store()
        assert [r.job_name for r in again.refusals(AuditFilter(tenant=B))] == ["theirs"]
        assert [r.job_name for r in again.refusals(AuditFilter())] == ["theirs", "j2", "j3", "j4"]
        assert again.refusals(AuditFilter(job_id="j-1")) == []
        assert [r.job_name for r in again.refusals(AuditFilter(since=NOW + timedelta(seconds=3)))] == [
            "j3", "j4"
        ]
        assert [r.job_name for r in again.refusals(AuditFilter(limit=1))] == ["j4"]

    def test_active_counts_by_state_site_and_tenant(self, store: JobStore) -> None:
        a1 = self.submit_one(store, A)
        self.submit_one(store, A)
        b = self.submit_one(store, B)
        store.transition(a1.id, JobState.PLACING, LATER, site=SiteId("aws-east"))
        store.transition(b.id, JobState.CANCELLED, LATER)
        assert store.active_counts() == {("QUEUED", "", A): 1, ("PLACING", "aws-east", A): 1}

    # leadership and fencing -------------------------------------------------------------------

    def raw(self, store: JobStore, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows read around the store (another connection), for columns the API does not show."""
        raise NotImplementedError  # pragma: no cover - overridden

    def fenced_writes(self, store: JobStore, job: Job, attempt: Attempt) -> list[Callable[[], object]]:
        """One of each scheduler write, all of them legal for `job` and `attempt` as set up."""
        return [
            lambda: store.transition(job.id, JobState.PROVISIONING, LATER, message="deposed"),
            lambda: store.record(job.id, LATER, kind="waiting", message="deposed"),
            lambda: store.record_many([(job.id, "waiting", "deposed", {})], LATER),
            lambda: store.create_attempt(job.id, SiteId("s"), OFFER, "tok-deposed", LATER),
            lambda: store.update_attempt(attempt.id, LATER, state=AttemptState.RUNNING, backend_id="i-x"),
            lambda: store.reserve_spend(entry(attempt.id, 5), tenant_limit=None, global_limit=None),
            lambda: store.settle_spend(attempt.id, 9.0, 0.0),
            lambda: store.drop_cancel_request(job.id),
        ]

    def snapshot(self, store: JobStore, job: Job) -> tuple[object, ...]:
        return (
            store.get(job.id),
            store.events_after(job.id, 0),
            store.attempts_for(job.id),
            store.spend_entries("2026-11"),
        )

    def test_a_store_makes_its_broker_id_once_and_every_process_of_it_shares_it(
        self, open_store: StoreFactory
    ) -> None:
        made = open_store().broker_id()
        assert made.startswith("szb-") and len(made) == len("szb-") + 8, made
        assert open_store().broker_id() == made  # (another process of the store, a restart)

    def test_a_store_with_attempts_from_before_per_store_ids_keeps_the_old_default(
        self, open_store: StoreFactory
    ) -> None:
        # Its instances and Slurm jobs were tagged "shangzhuang": a new id would lose sight of them.
        store = open_store()
        store.create_attempt(self.submit_one(store).id, SiteId("east"), OFFER, "tok-old", NOW)
        assert store.broker_id() == "shangzhuang"

    def test_leadership_is_empty_until_claimed_then_shows_the_holder(self, open_store: StoreFactory) -> None:
        one, two = open_store(), open_store()
        assert one.leadership() is None
        first = one.claim_leadership("sched-1", 4242, 10.0, NOW)
        lease = two.leadership()
        assert lease is not None
        assert (lease.epoch, lease.holder, lease.holder_pid) == (first, "sched-1", 4242)
        assert lease.lease_until == NOW + timedelta(seconds=10)
        second = two.claim_leadership("sched-2", None, 5.0, LATER)
        assert second == first + 1
        again = one.leadership()
        assert again is not None
        assert (again.epoch, again.holder, again.holder_pid) == (second, "sched-2", None)
        assert again.lease_until == LATER + timedelta(seconds=5)

    def test_renew_extends_the_current_epoch_and_fails_after_a_takeover(
        self, open_store: StoreFactory
    ) -> None:
        one, two = open_store(), open_store()
        epoch = one.claim_leadership("sched-1", None, 10.0, NOW)
        assert one.renew_leadership("sched-1", epoch, 10.0, LATER)
        lease = two.leadership()
        assert lease is not None and lease.lease_until == LATER + timedelta(seconds=10)
        assert not one.renew_leadership("sched-other", epoch, 10.0, LATER)  # not the holder
        two.claim_leadership("sched-2", None, 10.0, LATER)
        assert not one.renew_leadership("sched-1", epoch, 60.0, LATER + timedelta(minutes=1))
        lease = two.leadership()
        assert lease is not None and lease.holder == "sched-2"
        assert lease.lease_until == LATER + timedelta(seconds=10)

    def test_current_epoch_writes_succeed_and_carry_the_epoch(self, open_store: StoreFactory) -> None:
        leader = open_store()
        job = self.submit_one(leader)
        epoch = leader.claim_leadership("sched-1", None, 10.0, NOW)
        leader.set_fence(epoch)
        leader.transition(job.id, JobState.PLACING, NOW)
        attempt = leader.create_attempt(job.id, SiteId("s"), OFFER, "tok-1", NOW)
        for write in self.fenced_writes(leader, job, attempt):
            write()
        assert leader.get(job.id).state is JobState.PROVISIONING
        assert leader.get_attempt(attempt.id).state is AttemptState.RUNNING
        assert leader.spend_entries("2026-11")[0].settled
        epochs = self.raw(leader, "SELECT seq, epoch FROM events WHERE job_id = ? ORDER BY seq", (job.id,))
        assert epochs[0] == (1, None)  # the submission is not a scheduler decision
        assert {e for _, e in epochs[1:]} == {epoch} and len(epochs) == 5
        rows = self.raw(leader, "SELECT id, epoch FROM attempts WHERE job_id = ? ORDER BY id", (job.id,))
        assert [e for _, e in rows] == [epoch, epoch]
        # An unfenced report (an agent's, through an API replica) keeps the leader's epoch.
        api = open_store()
        api.update_attempt(attempt.id, LATER, backend_id="i-y")
        assert self.raw(api, "SELECT epoch FROM attempts WHERE id = ?", (attempt.id,)) == [(epoch,)]

    def test_a_deposed_store_cannot_write_and_stores_nothing(self, open_store: StoreFactory) -> None:
        old, new = open_store(), open_store()
        job = self.submit_one(old)
        old.set_fence(old.claim_leadership("sched-1", None, 10.0, NOW))
        old.transition(job.id, JobState.PLACING, NOW)
        attempt = old.create_attempt(job.id, SiteId("s"), OFFER, "tok-1", NOW)
        old.reserve_spend(entry(attempt.id, 5), tenant_limit=None, global_limit=None)
        before = self.snapshot(new, job)
        new.set_fence(new.claim_leadership("sched-2", None, 10.0, LATER))
        for write in self.fenced_writes(old, job, attempt):
            with pytest.raises(FencedOut):
                write()
        with pytest.raises(StoreError):  # FencedOut is a StoreError: callers' handlers see it
            old.transition(job.id, JobState.CANCELLED, LATER)
        assert self.snapshot(new, job) == before
        assert self.snapshot(old, job) == before
        # The new leader writes; the old one, unfenced again, is just a client.
        assert new.transition(job.id, JobState.PROVISIONING, LATER).state is JobState.PROVISIONING
        old.set_fence(None)
        assert old.record(job.id, LATER, kind="note").state is JobState.PROVISIONING

    def test_unfenced_inserts_and_cancels_keep_working_during_a_takeover(
        self, open_store: StoreFactory
    ) -> None:
        api, one, two = open_store(), open_store(), open_store()
        one.set_fence(one.claim_leadership("sched-1", None, 10.0, NOW))
        queued = self.submit_one(api)
        two.set_fence(two.claim_leadership("sched-2", None, 10.0, NOW))
        with pytest.raises(FencedOut):
            one.transition(queued.id, JobState.PLACING, LATER)
        [(late, created)] = api.submit(B, [Submission(spec("late"), client_id="c-9")], LATER)
        assert created
        assert api.transition(queued.id, JobState.CANCELLED, LATER).state is JobState.CANCELLED
        assert two.transition(late.id, JobState.PLACING, LATER).state is JobState.PLACING
        assert [j.id for j in api.jobs_in_states([JobState.PLACING])] == [late.id]

    def test_a_cancel_request_is_recorded_once_for_a_live_job_then_dropped_by_the_leader(
        self, open_store: StoreFactory
    ) -> None:
        api, leader = open_store(), open_store()
        job = self.submit_one(api)
        api.transition(job.id, JobState.PLACING, NOW)
        asked = CancelRequest(job.id, "alice", "tenant", LATER)
        got, new = api.request_cancel(asked, "cancel requested by alice")
        assert new and got.state is JobState.PLACING and got.message == "cancel requested by alice"
        again, new = api.request_cancel(CancelRequest(job.id, "bob", "operator", LATER), "by bob")
        assert not new and again.message == "cancel requested by alice"  # the first one stands
        assert leader.cancel_request(job.id) == asked and leader.cancel_requests() == [asked]
        [event] = [e for e in api.events_after(job.id, 0) if e.kind == "cancel_requested"]
        assert (event.state, event.time) == (JobState.PLACING, LATER)
        assert event.data == {"by": "alice", "role": "tenant"}
        leader.set_fence(leader.claim_leadership("sched-1", None, 10.0, NOW))
        leader.drop_cancel_request(job.id)
        assert api.cancel_request(job.id) is None and api.cancel_requests() == []
        api.transition(job.id, JobState.CANCELLED, LATER)
        assert not api.request_cancel(asked, "too late")[1]  # an ended job: nothing to settle
        assert api.cancel_requests() == [] and api.get(job.id).message != "too late"

    def test_the_leaders_site_report_is_read_by_others_and_a_deposed_one_cannot_replace_it(
        self, open_store: StoreFactory
    ) -> None:
        api, old, new = open_store(), open_store(), open_store()
        assert api.site_report() is None
        old.set_fence(old.claim_leadership("sched-1", None, 10.0, NOW))
        old.publish_site_report('{"unhealthy": {"s": "circuit open: AuthError"}}', NOW)
        old.publish_site_report('{"unhealthy": {}}', NOW)  # replaces
        assert api.site_report() == ('{"unhealthy": {}}', NOW)
        new.set_fence(new.claim_leadership("sched-2", None, 10.0, LATER))
        with pytest.raises(FencedOut):
            old.publish_site_report('{"stale": true}', LATER)
        new.publish_site_report('{"unhealthy": {"s": "unreachable"}}', LATER)
        assert api.site_report() == ('{"unhealthy": {"s": "unreachable"}}', LATER)


class TestSqliteStore(StoreContract):
    __test__ = True

    @pytest.fixture
    def open_store(self, tmp_path: Path) -> Iterator[StoreFactory]:
        opened: list[JobStore] = []

        def factory() -> JobStore:
            opened.append(SqliteStore(tmp_path / "broker.db"))
            return opened[-1]

        yield factory
        for s in opened:
            s.close()

    INDEX_NAMED = "SELECT name FROM sqlite_master WHERE type = 'index' AND name = ?"

    def raw(self, store: JobStore, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert isinstance(store, SqliteStore)
        with closing(sqlite3.connect(store.path)) as db:
            rows = db.execute(sql, params).fetchall()
            db.commit()  # a change made around the store lasts
            return rows

    def test_recent_runtimes_read_the_partial_index_not_the_table(self, store: JobStore) -> None:
        """A tenant with a deep queue still learns its ratio from an index range, not a scan."""
        self.submit_one(store)
        plan = self.raw(
            store,
            "EXPLAIN QUERY PLAN SELECT id, spec FROM jobs WHERE tenant = ? AND state = 'SUCCEEDED' "
            "ORDER BY id DESC LIMIT ?",
            ("team-a", 5),
        )
        text = " ".join(str(r[-1]) for r in plan)
        # The partial index, or the (state, tenant, id) one that serves a deep queue's heads too.
        ranged = "jobs_succeeded" in text or "jobs_queue_groups (state=? AND tenant=?)" in text
        assert ranged and "TEMP B-TREE" not in text, text


class TestPostgresStore(StoreContract):
    __test__ = True

    @pytest.fixture
    def open_store(self, pg_dsn: str) -> Iterator[StoreFactory]:
        opened: list[JobStore] = []

        def factory() -> JobStore:
            opened.append(PostgresStore(pg_dsn))
            return opened[-1]

        yield factory
        for s in opened:
            s.close()

    INDEX_NAMED = "SELECT indexname FROM pg_indexes WHERE indexname = ?"

    def raw(self, store: JobStore, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg

        assert isinstance(store, PostgresStore)
        with psycopg.connect(store.dsn, autocommit=True) as db:
            cur = db.execute(sql.replace("?", "%s"), params)
            return cur.fetchall() if cur.description is not None else []  # DDL returns no rows

    def test_a_fenced_write_waits_for_a_claim_in_flight_then_is_refused(
        self, open_store: StoreFactory, pg_dsn: str
    ) -> None:
        """FOR SHARE on the lease row: a write racing a takeover either commits before the claim
        or sees the new epoch; unfenced API writes do not wait for the claim at all."""
        import psycopg

        old, api = open_store(), open_store()
        job = self.submit_one(old)
        old.set_fence(old.claim_leadership("sched-1", None, 10.0, NOW))
        outcome: list[object] = []

        def deposed_write() -> None:
            try:
                outcome.append(old.transition(job.id, JobState.PLACING, LATER))
            except Exception as exc:
                outcome.append(exc)

        with psycopg.connect(pg_dsn) as claimer, psycopg.connect(pg_dsn, autocommit=True) as admin:
            # A claim, its transaction still open.
            claimer.execute("UPDATE leadership SET epoch = epoch + 1, holder = 'sched-2' WHERE id = 1")
            writer = threading.Thread(target=deposed_write)
            writer.start()
            self.wait_for_lock_wait(admin, "FOR SHARE")
            [(other, created)] = api.submit(B, [Submission(spec("during"), client_id="c-1")], LATER)
            assert created and api.transition(other.id, JobState.CANCELLED, LATER).state is JobState.CANCELLED
            assert writer.is_alive()
            claimer.commit()
        writer.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], FencedOut)
        assert old.get(job.id).state is JobState.QUEUED and len(old.events_after(job.id, 0)) == 1

    @staticmethod
    def wait_for_lock_wait(admin: Any, query_part: str) -> None:
        """Until a session waits on a lock in a statement containing `query_part` (`admin` is in
        autocommit: a transaction would keep reading one snapshot of pg_stat_activity)."""
        for _ in range(600):
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                (f"%{query_part}%",),
            ).fetchone()
            if row[0]:
                return
            threading.Event().wait(0.05)
        pytest.fail(f"no session waited on a lock in a statement with {query_part!r}")

    def test_nul_characters_are_stored_as_replacement_characters(self, store: JobStore) -> None:
        job = self.submit_one(store)
        moved = store.transition(job.id, JobState.PLACING, LATER, message="a\x00b", log_tail="x\x00")
        assert (moved.message, moved.log_tail) == ("a\ufffdb", "x\ufffd")
        assert store.events_after(job.id, 1)[0].message == "a\ufffdb"
