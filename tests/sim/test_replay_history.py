"""Reading a store's history for `szb policy replay`: runtimes, `--since`, capacity errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from broker.model import AttemptState, JobSpec, JobState, Offer, SiteId, TenantId
from broker.sim.replay import read_history, scenario_for
from broker.store.base import Submission
from broker.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
OFFER = Offer(
    site=SiteId("aws-east"), instance_type="g5.xlarge", accelerator="A10G", count=1, price_per_hour=1.0
)


def test_history_runtimes_since_and_capacity_errors(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "broker.db")
    try:
        spec = JobSpec.model_validate({"name": "x", "command": ["true"], "runtime_estimate": "1h"})
        (old, _), (new, _) = (
            store.submit(TenantId("team-a"), [Submission(spec)], T0)[0],
            store.submit(TenantId("team-a"), [Submission(spec)], T0 + timedelta(hours=2))[0],
        )
        first = store.create_attempt(new.id, OFFER.site, OFFER, "tok-1", T0 + timedelta(hours=2))
        store.update_attempt(
            first.id, T0 + timedelta(hours=2), state=AttemptState.FAILED,
            error="CapacityError: InsufficientInstanceCapacity",
        )  # fmt: skip
        for state, minutes in ((JobState.PLACING, 0), (JobState.PROVISIONING, 1), (JobState.RUNNING, 3)):
            store.transition(new.id, state, T0 + timedelta(hours=2, minutes=minutes))
        store.transition(new.id, JobState.SUCCEEDED, T0 + timedelta(hours=2, minutes=43))

        everything = read_history(store, None)
        assert [j.id for j in everything.jobs] == [old.id, new.id]
        assert everything.runtimes_s == {new.id: 40 * 60.0}  # RUNNING -> end; `old` never ran
        assert everything.capacity_errors == {"aws-east": 1}
        world = scenario_for(everything)
        assert world.stockouts_for("aws-east").per_day == 12.0  # 1 error over the 2 h history
        assert world.stockouts_for("ali-bj").per_day == 0.0

        recent = read_history(store, T0 + timedelta(hours=1))
        assert [j.id for j in recent.jobs] == [new.id]
    finally:
        store.close()


def test_replay_prices_offers_at_what_the_store_recorded(tmp_path: Path) -> None:
    """#15 replay: an offer's recorded price (the newest) replaces the catalog's in the replay."""
    from broker.policy import load_policy
    from broker.policy.offers import static_offers
    from broker.sim.replay import replay

    policy = load_policy(Path(__file__).resolve().parents[2] / "configs/policy.yaml")
    spec = JobSpec.model_validate(
        {
            "name": "t4",
            "command": ["true"],
            "runtime_estimate": "1h",
            "max_wait": "0s",
            "spot": "never",
            "resources": {"accelerators": {"count": 1, "any_of": ["T4"]}},
        }
    )
    store = SqliteStore(tmp_path / "broker.db")
    try:
        (job, _) = store.submit(TenantId("pku-nlp"), [Submission(spec)], T0)[0]
        catalog = replay(policy, read_history(store, None))
        chosen = catalog.sites[0]
        assert chosen is not None and not chosen.startswith("onprem")
        same = [o for o in static_offers(policy) if o.site == chosen and o.accelerator == "T4" and not o.spot]
        for n, offer in enumerate(same):  # every zone of that site quoted dear, the newest quote dearest
            for minutes, price in ((0, 2 * offer.price_per_hour), (5, 50 * offer.price_per_hour)):
                at = T0 + timedelta(minutes=minutes)
                quoted = offer.model_copy(update={"price_read_at": at, "price_per_hour": price})
                store.create_attempt(job.id, offer.site, quoted, f"t{n}-{minutes}", at)
        offer = same[0]
        history = read_history(store, None)
        assert history.prices[offer.key] == (50 * offer.price_per_hour, offer.currency)  # the newest quote
        recorded = replay(policy, history)
        assert recorded.sites[0] != chosen  # that offer is now dear: the replay picks another
        assert summarize_cost(recorded) > summarize_cost(catalog)
    finally:
        store.close()


def summarize_cost(run: object) -> float:
    from broker.sim.metrics import summarize

    return float(summarize(run.run)["cost"])  # type: ignore[attr-defined]


def test_a_job_cancelled_before_any_launch_is_left_out(tmp_path: Path) -> None:
    """#15 review: a job cancelled while it queued never ran; replaying it for its whole estimate
    charged both policies for work nobody did. A job cancelled once running keeps its real run."""
    store = SqliteStore(tmp_path / "broker.db")
    try:
        spec = JobSpec.model_validate({"name": "x", "command": ["true"], "runtime_estimate": "10h"})
        (queued, _), (ran, _), (waiting, _) = (
            store.submit(TenantId("team-a"), [Submission(spec)], T0 + timedelta(minutes=m))[0]
            for m in (0, 1, 2)
        )
        store.transition(queued.id, JobState.CANCELLED, T0 + timedelta(minutes=30))
        store.create_attempt(ran.id, OFFER.site, OFFER, "tok-r", T0 + timedelta(minutes=1))
        for state, minutes in ((JobState.PLACING, 1), (JobState.PROVISIONING, 1), (JobState.RUNNING, 3)):
            store.transition(ran.id, state, T0 + timedelta(minutes=minutes))
        store.transition(ran.id, JobState.CANCELLED, T0 + timedelta(minutes=13))
        history = read_history(store, None)
        assert [j.id for j in history.jobs] == [ran.id, waiting.id]  # the one still queued is replayed
        assert history.runtimes_s == {ran.id: 600.0}
        assert history.skipped == {"cancelled before any launch": 1}
    finally:
        store.close()


def test_a_requeued_job_replays_the_work_it_did_not_its_wait(tmp_path: Path) -> None:
    """#15 review: a job preempted and requeued ran 1 h, waited 1 h, ran 1 h more. Its runtime was
    first RUNNING to the end (2 h 57 m, the requeued wait and a relaunch in it); now its last run
    when it restarts from zero, both runs when it resumes from a checkpoint."""
    store = SqliteStore(tmp_path / "broker.db")
    try:
        ids = []
        for n, checkpoint in enumerate((None, {"interval": "30m"})):
            body = {"name": f"x{n}", "command": ["true"], "runtime_estimate": "2h", "checkpoint": checkpoint}
            (job, _) = store.submit(TenantId("team-a"), [Submission(JobSpec.model_validate(body))], T0)[0]
            steps = [(JobState.PLACING, 0), (JobState.PROVISIONING, 1), (JobState.RUNNING, 3)]
            steps += [(JobState.QUEUED, 63), (JobState.PLACING, 120), (JobState.PROVISIONING, 121)]
            steps += [(JobState.RUNNING, 123), (JobState.SUCCEEDED, 183)]
            for k, (state, minutes) in enumerate(steps):
                if state == JobState.PROVISIONING:
                    store.create_attempt(
                        job.id, OFFER.site, OFFER, f"t{n}{k}", T0 + timedelta(minutes=minutes)
                    )
                store.transition(job.id, state, T0 + timedelta(minutes=minutes))
            ids.append(job.id)
        history = read_history(store, None)
        assert [j.attempts for j in history.jobs] == [2, 2]
        assert history.runtimes_s == {ids[0]: 3600.0, ids[1]: 7200.0}
    finally:
        store.close()


def test_a_move_between_partitions_of_one_site_is_a_placement_change(tmp_path: Path) -> None:
    """#15 review: the diff compared sites only, so a job the candidate moves from the on-prem
    Ascend partition to its A800 one (a dearer Ascend) was not listed as moved."""
    from broker.policy import load_policy
    from broker.sim.replay import diff, replay

    configs = Path(__file__).resolve().parents[2] / "configs"
    current = load_policy(configs / "policy.yaml")
    text = (configs / "policy.yaml").read_text()
    assert text.count("price_hour: 9.0 ") == 1
    (tmp_path / "accelerators.yaml").write_text((configs / "accelerators.yaml").read_text())
    (tmp_path / "regimes.yaml").write_text((configs / "regimes.yaml").read_text())
    (tmp_path / "catalog").symlink_to(configs / "catalog")
    (tmp_path / "dear.yaml").write_text(text.replace("price_hour: 9.0 ", "price_hour: 30.0 "))
    candidate = load_policy(tmp_path / "dear.yaml")
    spec = JobSpec.model_validate(
        {
            "name": "either",
            "command": ["true"],
            "runtime_estimate": "1h",
            "resources": {"accelerators": {"count": 1, "any_of": ["A800", "Ascend910B"]}},
        }
    )
    store = SqliteStore(tmp_path / "broker.db")
    try:
        store.submit(TenantId("pku-nlp"), [Submission(spec)], T0)
        history = read_history(store, None)
    finally:
        store.close()
    result = diff(history, replay(current, history), replay(candidate, history))
    (moved,) = result["placement_changed"]
    assert moved["site_before"] == moved["site_after"] == "shangzhuang-onprem"
    assert (moved["placed_before"], moved["placed_after"]) == (
        "shangzhuang-onprem/ascend",
        "shangzhuang-onprem/a800",
    )


def test_a_job_still_running_past_its_estimate_replays_at_least_what_it_ran(tmp_path: Path) -> None:
    """#15 review: a job still RUNNING when the store is read replayed its estimate even when it
    had already run three times as long; now at least until the store's last update."""
    store = SqliteStore(tmp_path / "broker.db")
    try:
        ids = []
        for name, estimate in (("short", "1h"), ("long", "10h")):
            spec = JobSpec.model_validate({"name": name, "command": ["true"], "runtime_estimate": estimate})
            (job, _) = store.submit(TenantId("team-a"), [Submission(spec)], T0)[0]
            for state, minutes in ((JobState.PLACING, 0), (JobState.PROVISIONING, 1), (JobState.RUNNING, 3)):
                store.transition(job.id, state, T0 + timedelta(minutes=minutes))
            ids.append(job.id)
        later = JobSpec.model_validate({"name": "later", "command": ["true"], "runtime_estimate": "1h"})
        store.submit(TenantId("team-a"), [Submission(later)], T0 + timedelta(hours=3, minutes=3))
        history = read_history(store, None)
        assert history.runtimes_s == {ids[0]: 3 * 3600.0}  # the 10 h one keeps its estimate
    finally:
        store.close()


def test_the_report_plots_every_row_of_the_table() -> None:
    """The replay's plots showed five of the table's seven rows (never started and late missing)."""
    from broker.commands.replay import ROWS
    from broker.sim.replay_report import PANELS

    assert list(PANELS) == list(ROWS)


def test_the_table_prints_totals_whole_to_the_cent(capsys: pytest.CaptureFixture[str]) -> None:
    """A held-out review: `:g` printed 14,355.25 as 14355.2 and 2,273,010.5 as 2.27301e+06, and the
    change column lost its cents."""
    from broker.commands.replay import _table

    current = {"cost": 14_355.25, "p50_wait_s": 97.0, "p95_wait_s": 13_801.0, "bursts": 1_302}
    candidate = {"cost": 2_273_010.5, "p50_wait_s": 97.0, "p95_wait_s": 12_000.5, "bursts": 1_290}
    delta = {k: candidate[k] - current[k] for k in current}
    result = {
        "jobs": 7_214, "currency": "CNY", "current": current, "candidate": candidate, "delta": delta,
        "current_policy": "aaaa", "candidate_policy": "bbbb", "capacity_errors": {},
        "placement_changed": [], "refusals_new": [], "refusals_gone": [],
    }
    _table(result)
    out = capsys.readouterr().out
    assert "14,355.25" in out and "2,273,010.50" in out and "+2,258,655.25" in out, out
    assert "-1,800.50" in out and "-12" in out and "1,302" in out, out
    assert "e+06" not in out and "14355.2 " not in out
    from broker.sim.replay_report import figure

    assert (figure(0.004, sign=True), figure(0.0), figure(None)) == ("+0.004", "0.00", "-")  # (not "+0.00")


def test_a_gang_job_replays_at_the_price_of_all_its_nodes(tmp_path: Path) -> None:
    """A 2-node job runs on two instances, and the live broker bills it so (`estimate_cost` x
    nodes, as its decision reserved); the replay billed one. On-prem is one 4-GPU node, so the
    1-node job runs there (2 CNY/h) and the 2-node one on two 10 CNY/h gpu.small: 20 CNY."""
    from broker.sim.replay import replay
    from tests.sim.conftest import tiny_policy

    policy = tiny_policy(tmp_path, gpus=4)
    store = SqliteStore(tmp_path / "broker.db")
    try:
        for nodes in (1, 2):
            spec = JobSpec.model_validate(
                {
                    "name": f"nodes-{nodes}",
                    "command": ["true"],
                    "runtime_estimate": "1h",
                    "spot": "never",
                    "resources": {"nodes": nodes, "accelerators": {"count": 1, "any_of": ["A800"]}},
                }
            )
            store.submit(TenantId("t1"), [Submission(spec)], T0 + timedelta(hours=3 * nodes))
        got = replay(policy, read_history(store, None))
    finally:
        store.close()
    single, gang = got.run.records
    assert not single.burst and single.cost_onprem == pytest.approx(2.0)
    assert gang.burst and gang.cost_cloud == pytest.approx(2 * 10.0)
    assert gang.cash == pytest.approx(2 * 10.0)


def test_a_deadline_is_replayed_at_the_recorded_time(tmp_path: Path) -> None:
    """#15 review: the replay's clock started at the simulator's own epoch (1 March 2026), so an
    absolute `deadline` recorded in November was months away: a job the broker had failed as
    "can no longer be met" replayed as run on time, its cost counted. It now runs at the recorded
    submit times: a deadline too close for the job's estimate is refused in the replay too, and
    one with room runs."""
    from broker.policy import load_policy
    from broker.sim.replay import replay

    policy = load_policy(Path(__file__).resolve().parents[2] / "configs/policy.yaml")

    def spec(name: str, deadline: datetime) -> JobSpec:
        return JobSpec.model_validate(
            {"name": name, "command": ["true"], "runtime_estimate": "30m", "deadline": deadline.isoformat(),
             "resources": {"accelerators": {"count": 1, "any_of": ["A800"]}}}
        )  # fmt: skip

    store = SqliteStore(tmp_path / "broker.db")
    try:
        store.submit(TenantId("pku-nlp"), [Submission(spec("tight", T0 + timedelta(minutes=20)))], T0)
        roomy = spec("roomy", T0 + timedelta(hours=3))
        store.submit(TenantId("pku-nlp"), [Submission(roomy)], T0 + timedelta(minutes=1))
        run = replay(policy, read_history(store, None))
        tight, fine = run.run.records
        assert tight.rejected and run.sites[0] is None and tight.cost == 0.0
        assert not fine.rejected and run.sites[1] is not None and fine.cost > 0.0
    finally:
        store.close()


def test_a_burst_replays_with_its_sites_recorded_launch_times(tmp_path: Path) -> None:
    """#15 review: the replay drew every launch from the default world (60-300 s), so bursts the
    broker had up within a second, at `max_wait: 0s`, replayed as late. A site's recorded launch
    times (attempt created to job running) are now its provisioning delay."""
    from broker.policy import load_policy
    from broker.policy.offers import static_offers
    from broker.sim.replay import replay

    policy = load_policy(Path(__file__).resolve().parents[2] / "configs/policy.yaml")
    spec = JobSpec.model_validate(
        {"name": "t4", "command": ["true"], "runtime_estimate": "1h", "max_wait": "0s", "spot": "never",
         "resources": {"accelerators": {"count": 1, "any_of": ["T4"]}}}
    )  # fmt: skip
    store = SqliteStore(tmp_path / "broker.db")
    try:
        (job, _) = store.submit(TenantId("pku-nlp"), [Submission(spec)], T0)[0]
        first = replay(policy, read_history(store, None))
        site = first.sites[0]
        assert site is not None and first.run.records[0].start_s - first.run.records[0].arrival_s >= 60
        offer = next(o for o in static_offers(policy) if o.site == site and o.accelerator == "T4")
        store.create_attempt(job.id, offer.site, offer, "tok", T0)
        store.transition(job.id, JobState.PLACING, T0)
        store.transition(job.id, JobState.PROVISIONING, T0)
        store.transition(job.id, JobState.RUNNING, T0 + timedelta(seconds=20), kind="running")
        store.transition(job.id, JobState.SUCCEEDED, T0 + timedelta(hours=1, seconds=20))
        history = read_history(store, None)
        assert history.launch_s == {site: [20.0]}
        again = replay(policy, history)
        assert again.sites[0] == site
        assert again.run.records[0].start_s - again.run.records[0].arrival_s == 20.0
    finally:
        store.close()


def _submission(name: str, count: int = 0) -> Submission:
    res = {"accelerators": {"count": count, "any_of": ["A800"]}} if count else {}
    fields = {"name": name, "command": ["true"], "runtime_estimate": "1m", "resources": res}
    spec = JobSpec.model_validate(fields)
    return Submission(spec=spec, by="dev", role="operator")


def test_a_refused_call_cut_by_the_refusal_cap_keeps_its_cause(tmp_path: Path) -> None:
    """A review: the refused job was written first, so the per-tenant cap (it prunes the oldest)
    dropped it before its call's placeable jobs, and a replay under the policy that refused the
    call ran them. The cause is written last now; a resent job already stored is no refusal."""
    from broker.policy import load_policy
    from broker.refusals import call_refusals
    from broker.sim.replay import replay
    from tests.brokerproc import ROOT

    policy = load_policy(ROOT / "broker" / "defaults" / "policy.yaml")
    store = SqliteStore(tmp_path / "broker.db")
    why = ["hardware.fit: a800 has 8 x A800; the job needs 16"]
    call = [_submission("wide", 16), *(_submission(n) for n in ("h1", "h2", "h3", "kept"))]
    records = call_refusals(TenantId("dev"), [(0, call[0], why)], call, "x:y", T0, stored={4})
    assert [r.job_name for r in records] == ["h1", "h2", "h3", "wide"]  # (kept: stored, not refused)
    store.record_refusals(records, keep=4)
    again = [_submission("wide", 16)]
    later = T0 + timedelta(minutes=1)
    store.record_refusals(call_refusals(TenantId("dev"), [(0, again[0], why)], again, "x:y", later), keep=4)
    history = read_history(store, None)
    assert [j.spec.name for j in history.jobs] == ["h2", "h3", "wide", "wide"]  # h1, the oldest, pruned
    run = replay(policy, history).run
    assert all(r.rejected for r in run.records), run.records
