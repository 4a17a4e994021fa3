"""The discrete-event engine: a virtual clock driving a strategy over simulated backends.

Each event (arrival, capacity freed, instance up, launch failed, spot interruption, timer)
opens a dispatch pass: a `PassSnapshot` of the simulated world, built as the live planner builds
one, in which the few jobs the event concerns are decided in queue order. Jobs are re-decided
only when the answer can change: on arrival; when capacity frees in a partition they could use
(at most `redecide_head` per event; not one `onprem_gpus` shrank below a gang the policy's node
count admits); when a cloud route frees a slot; when a timer the decision implies runs out.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from itertools import islice

from adapters.base import CapacityError
from broker.burst import is_onprem
from broker.burst.claims import LateClaims
from broker.burst.money import month_of, voucher_for
from broker.burst.snapshot import PassSnapshot, partition_key
from broker.burst.spot import offer_outlook
from broker.decision import Action, Decision
from broker.dispatch.failover import Blocklist, FailoverPolicy
from broker.fairshare import QueuedWork, charge_factor, standings
from broker.fairshare.book import Holding, capacity_of, demand_of
from broker.fairshare.holds import Holds, claimed_meanwhile
from broker.model import Offer
from broker.policy import Policy
from broker.sim.admission import Admission
from broker.sim.audit import Auditor
from broker.sim.backends import Clouds, Ledger, OfferBook, Partition, onprem_partitions
from broker.sim.expected import estimate_of
from broker.sim.fairbook import IncrementalBook
from broker.sim.jobs import EPOCH, SimJob
from broker.sim.metrics import RunResult, Series, carbon_g
from broker.sim.preempt import swap_instead
from broker.sim.queues import FairRatios, LaunchQueue, ProjectedQueues, Waits, arrivals, dispatch_key
from broker.sim.scenario import Scenario
from broker.sim.spot_rule import interrupted
from broker.sim.state import EVENT_KINDS, Fenwick, Line, SimState, Strategy, line_of, take_heads

FINISH, UP, FAIL, STOP, TIMER = EVENT_KINDS


class Engine:
    def __init__(
        self, policy: Policy, jobs: Sequence[SimJob], scenario: Scenario, strategy: Strategy, *,
        progress: Callable[[int], None] | None = None,
        auditor: Auditor | None = None,
        prices: Mapping[str, tuple[float, str]] | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.policy, self.jobs, self.scenario, self.strategy = policy, jobs, scenario, strategy
        self.admission = admission  # a replay's submissions under the live quotas
        self.progress = progress
        horizon = (jobs[-1].arrival_s if jobs else 0.0) + 86400.0
        self.parts: dict[str, Partition] = onprem_partitions(policy, scenario.onprem_gpus)
        self.clouds = Clouds(policy, scenario, horizon)
        self.book = OfferBook(policy, self.parts, self.clouds.mean_provisioning_s(), prices)
        # Simulated second 0 is `epoch` (deadlines and budget months read it; a replay's is real).
        self.ledger, self.t, self.epoch = Ledger(policy), 0.0, jobs[0].epoch if jobs else EPOCH
        self.blocklist = Blocklist(clock=lambda: self.t)
        ttl = policy.burst.blocklist_ttl
        self.failover = FailoverPolicy(capacity_block_s=ttl.capacity.total_seconds(),
                                       quota_block_s=ttl.quota.total_seconds())
        self.state = [SimState.of(j) for j in jobs]
        # Fair share, as the live dispatcher orders its queue: per partition, each tenant's waiting
        # jobs per line (`line_of`); capacity that frees goes to the head of the fair-share order.
        self.fair = IncrementalBook(policy.document.fair_share.half_life.total_seconds())
        self.fair_capacity = capacity_of(policy)
        self.hold = policy.document.fair_share.hold_for_under_share
        self.holds = Holds()  # capacity kept for each partition's waiting head across passes
        self.by_tenant: dict[str, dict[Line, deque[tuple[int, int]]]] = {k: {} for k in self.parts}
        self.fen = {k: Fenwick(len(jobs)) for k in self.parts}
        self.cloud_wait: deque[tuple[int, int]] = deque()
        self.projected, self.launches, self.claims = ProjectedQueues(self.parts), LaunchQueue(), LateClaims()
        self.fair_ratios = FairRatios(self.projected, self.fair_capacity)
        if policy.burst.wait_model == "projected" and hasattr(strategy, "projector"):
            strategy.projector = self._project
        self.projected.running.learns = hasattr(strategy, "projector")  # only the policy reads ratios
        if hasattr(strategy, "runtime_ratio"):
            strategy.runtime_ratio = self.projected.running.learner.ratio
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = self.queued = self.decisions = 0
        self.causes: dict[str, int] = {}
        self.stockout_failures = 0
        self.series = Series()
        self._sample_every = max(60.0, horizon / scenario.sample_points)
        self._next_sample = 0.0
        every = scenario.audit_every or (1 if len(jobs) <= 20_000 else 10)
        self.auditor = auditor or Auditor(policy, every)  # shared by runs: each (job, offer) once

    # Events ---------------------------------------------------------------------------

    def _push(self, t: float, kind: int, job: int, tag: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (t, kind, self.seq, job, tag))

    def run(self) -> RunResult:
        started = time.perf_counter()
        nxt, n = 0, len(self.jobs)
        limit = (self.jobs[-1].arrival_s if self.jobs else 0.0) + 365 * 86400.0
        while nxt < n or self.events:
            if nxt < n and (not self.events or self.jobs[nxt].arrival_s < self.events[0][0]):
                batch, nxt = arrivals(self.jobs, nxt)  # one pass, as live: submitted together
                self._advance(self.jobs[nxt - 1].arrival_s)
                if self.admission is not None:
                    batch = self.admission.admitted(batch, self.jobs, self.state, self.t)
                for j in batch:
                    st = self.state[j]
                    st.queued, st.gen = True, st.gen + 1
                self.queued += len(batch)
                self._pass(batch, "arrival", ordered=True)
                if self.progress is not None and nxt // 500 > (nxt - len(batch)) // 500:
                    self.progress(nxt)
                continue
            t, kind, _, j, tag = heapq.heappop(self.events)
            if t > limit:
                break
            self._advance(t)
            self._handle(kind, j, tag)
        self._sample(force=True)
        if self.progress is not None:
            self.progress(n)
        return RunResult(
            strategy=self.strategy.name, records=[s.rec for s in self.state], series=self.series,
            decisions=self.decisions, budget_violations=self.ledger.violations(),
            stockout_failures=self.stockout_failures,
            wall_s=time.perf_counter() - started,
            runtime_ratios=self.projected.running.learner.ratios(),
        )

    def _advance(self, t: float) -> None:
        self.t = t
        if t >= self._next_sample:
            self._sample()

    def _sample(self, *, force: bool = False) -> None:
        acc = [p for p in self.parts.values() if p.accelerated]
        total = sum(p.total for p in acc)
        busy = sum(p.total - p.free for p in acc)
        running = sum(r.running + r.provisioning for r in self.clouds.routes.values())
        self.series.add(self.t, self.queued, busy / total if total else 0.0, running)
        self._next_sample = self.t + self._sample_every

    def _handle(self, kind: int, j: int, tag: int) -> None:
        st, job = self.state[j], self.jobs[j]
        if kind == TIMER:
            if st.queued and tag == st.timer_ver:
                self._pass([j], "timer")
            return
        if kind == FINISH:
            if tag != st.gen:  # a run stopped early (`broker.sim.preempt`)
                return
            assert st.offer is not None
            key = partition_key(st.offer)
            self.parts[key].finish(self.t, job.demand, self.projected.running.ended(key, job))
            self.fair.ended(str(j), self.epoch + timedelta(seconds=self.t))
            st.rec.end_s = self.t
            self._pass(self._heads(key), "capacity")
            self._pass([int(j) for j in self.claims.yielded_to(key, self.parts[key].free)], "yield")
            return
        assert st.offer is not None
        route = self.clouds.routes[st.offer.site]
        if kind == FAIL:
            route.provisioning -= 1
            self.clouds.end_attempt(st.offer.site, self.t, True)
            self.stockout_failures += 1
            self.blocklist.record(
                CapacityError(st.offer.site, "InsufficientInstanceCapacity", "simulated stock-out"),
                st.offer,
                self.failover,
            )
            self._settle(job, st, hours=0.0)
            self._requeue(job, st)
        elif kind == UP:
            route.up(self.t - st.running_since)  # (running_since: the launch, see _start_cloud)
            st.running_since = self.t
            if math.isnan(st.rec.start_s):
                st.rec.start_s = self.t
            lasts = self.clouds.interruption_after(st.offer, j, st.rec.attempts)
            left = job.runtime_s - st.done_s
            if lasts < left:
                self._push(self.t + lasts, STOP, j, 1)
            else:
                self._push(self.t + left, STOP, j, 0)
            self._pass(self._cloud_heads(), "route")
        elif kind == STOP:
            route.running -= 1
            self.clouds.end_attempt(st.offer.site, self.t, False)
            self._settle(job, st, hours=(self.t - st.running_since) / 3600)
            if tag == 1:
                interrupted(self, job, st, st.offer)
            else:
                st.rec.end_s = self.t
                self.projected.running.learn(job)
                self._pass(self._cloud_heads(), "route")

    def _requeue(self, job: SimJob, st: SimState) -> None:
        st.queued, st.gen, st.burst_before = True, st.gen + 1, True
        self.queued += 1
        self._pass([job.index, *self._cloud_heads()], "failover")

    def _heads(self, key: str) -> list[int]:
        """The first waiting jobs, in fair-share order, that a partition's free capacity could start."""
        part = self.parts[key]
        work: list[QueuedWork] = []
        for dq in self.by_tenant[key].values():
            while dq and (not self.state[dq[0][0]].queued or dq[0][1] != self.state[dq[0][0]].gen):
                dq.popleft()
            for j, gen in islice(dq, 8):
                if self.state[j].queued and gen == self.state[j].gen:
                    work.append(self.state[j].fair_work(self.jobs[j], self.state[j].cands or (key,)))
        if not work:
            return []
        now = self.epoch + timedelta(seconds=self.t)
        tenants = self.fair.tenant_states(self.policy, now, {w.tenant for w in work})
        charge, limit = charge_factor(self.fair.ledger.half_life_s), self.scenario.redecide_head
        ordered = standings(work, tenants, self.fair_capacity, charge=charge)  # read only up to the heads
        return take_heads(ordered, self.jobs, part.free, self.hold, limit, self.holds.at(key))

    def _cloud_heads(self) -> list[int]:
        out: list[int] = []
        while self.cloud_wait and len(out) < 2:
            j, gen = self.cloud_wait.popleft()
            st = self.state[j]
            if st.queued and gen == st.gen:
                out.append(j)
        return out

    # Passes -----------------------------------------------------------------------------

    def _pass(self, batch: list[int], cause: str, *, ordered: bool = False) -> None:
        queued = (j for j in batch if self.state[j].queued)
        batch = list(dict.fromkeys(queued)) if ordered else sorted(set(queued))
        if not batch:
            return
        self.causes[cause] = self.causes.get(cause, 0) + len(batch)
        now = self.epoch + timedelta(seconds=self.t)
        snap = PassSnapshot(
            now=now,
            offers=self.book.prepared,
            capacity_total=self.book.totals,
            capacity=self.book.capacity(self.t),
            routes=self.clouds.states(self.t, now),
            blocked=self.blocklist.keys(),
            no_images=self.book.no_images,
        )
        for j in batch:
            st = self.state[j]
            self.projected.remove(j)
            self.launches.remove(j)
            if st.wait_key is not None:
                self.fen[st.wait_key].add(j, -st.wait_units_h)
                st.wait_key = None
        added: dict[str, float] = {}
        for j in batch:
            job, st = self.jobs[j], self.state[j]
            for k, fen in self.fen.items():
                snap.backlog_h[k] = fen.prefix(j) + added.get(k, 0.0)
            before = dict(snap.backlog_h) if j != batch[-1] else {}  # (only the pass's next jobs read it)
            money = snap.money.get(job.tenant)
            if money is None:
                money = snap.money[job.tenant] = self.ledger.money(job.tenant, now)
            pending = job.created_at if st.burst_before else st.pending
            held = self.fair.held_for(self.holds, self.policy, now, str(j), job.tenant)
            with claimed_meanwhile(snap.claimed, held):  # kept for a waiting job ahead in fair order
                d = self.strategy.decide(st.deciding or job, snap, money, pending)  # off spot: as live
            self.decisions += 1
            st.rec.decisions += 1
            for k, v in snap.backlog_h.items() if j != batch[-1] else ():
                if v != before.get(k, 0.0):
                    added[k] = added.get(k, 0.0) + v - before.get(k, 0.0)
            st.pending = d.facts.burst_pending_since
            self._apply(job, st, d, snap)
            if not st.queued:
                self.holds.drop_unless(gone=str(j))

    def _apply(self, job: SimJob, st: SimState, d: Decision, snap: PassSnapshot) -> None:
        if d.action == Action.REJECT:
            st.queued, st.rec.rejected = False, True
            self.queued -= 1
        elif d.action == Action.WAIT:
            self._wait(job, st, d)
        else:
            assert d.offer is not None
            st.queued, st.offer, st.backoff = False, d.offer, 0.0
            self.queued -= 1
            st.rec.attempts += 1
            home = d.offer if is_onprem(self.policy, d.offer.site) else swap_instead(self, job, d)
            # Audited where it runs: a swap starts it on-prem instead of the burst's cloud offer.
            st.rec.compliant = st.rec.compliant and self.auditor.allows(job, home or d.offer, self.t)
            if home is not None:
                st.offer = home
                self._start_onprem(job, st, home, snap)
            else:
                self._start_cloud(job, st, d, snap)

    def _wait(self, job: SimJob, st: SimState, d: Decision) -> None:
        """Queue the job where the decision waits (backlog, projection, re-decision triggers)."""
        j = job.index
        if d.offer is not None and partition_key(d.offer) in self.fen:
            st.wait_key, st.wait_units_h = partition_key(d.offer), job.demand * estimate_of(job) / 3600
            self.fen[st.wait_key].add(j, st.wait_units_h)
            if d.facts.burst_in_s is None:  # a job about to burst holds up nobody
                left = self.projected.running.expected_left(job, st.done_s)
                self.projected.add(st.wait_key, j, dispatch_key(job), job.demand, left, job.tenant)
            elif d.facts.cloud_offer is not None:  # it takes a launch slot there at its last moment
                self.launches.add(d.facts.cloud_offer.split("/")[0], j, job.arrival_s + job.max_wait_s)
        if st.listed != st.gen:
            st.listed = st.gen
            if st.cands is None:
                ks = self.strategy.candidates(job, d)
                st.cands = tuple(k for k in ks if k in self.by_tenant and job.demand <= self.parts[k].total)
            for k in st.cands:
                self.by_tenant[k].setdefault(line_of(job), deque()).append((j, st.gen))
        if self.strategy.wants_cloud(d):
            self.cloud_wait.append((j, st.gen))
        when = self.strategy.timer(job, d, self.t, st.backoff)
        st.timer_ver += 1
        if when is not None:
            st.backoff = max(st.backoff * 2, self.policy.burst.blocklist_ttl.capacity.total_seconds())
            self._push(max(when, self.t + 1.0), TIMER, j, st.timer_ver)

    def _start_onprem(self, job: SimJob, st: SimState, offer: Offer, snap: PassSnapshot) -> None:
        left, key = job.runtime_s - st.done_s, partition_key(offer)
        self.parts[key].start(job.demand, self.t + max(0.0, estimate_of(job) - st.done_s))
        self.projected.running.started(key, job, self.t, st.done_s)
        demand = demand_of(job.spec)  # a gang's every node, as live
        self.fair.started(str(job.index), Holding(job.tenant, key, demand, job.demand, snap.now))
        st.rec.onprem_acc_h += job.demand * left / 3600
        if math.isnan(st.rec.start_s):
            st.rec.start_s = self.t
        hours = left / 3600 * job.spec.resources.nodes  # node-hours: a gang holds an offer per node
        st.rec.cost_onprem += self._price(offer) * hours
        st.rec.carbon_g += carbon_g(self.policy, offer, hours)
        st.rec.burst = False
        st.running_since = self.t
        self._push(self.t + left, FINISH, job.index, st.gen)

    def _start_cloud(self, job: SimJob, st: SimState, d: Decision, snap: PassSnapshot) -> None:
        offer = d.offer
        assert offer is not None
        if offer.spot:
            st.rec.spot = True
            outlook = offer_outlook(job.spec, offer, self.policy, (job.runtime_s - st.done_s) / 3600)
            if outlook.restarts > self.policy.burst.spot_max_expected_restarts:
                st.rec.spot_over_limit = True
        route = self.clouds.routes[offer.site]
        route.provisioning += 1
        st.rec.burst = True
        st.running_since = self.t  # the launch, until it is up: the route times its launches
        if self.clouds.stocked_out(offer.site, self.t):
            st.reserved = (0.0, 0.0, (), month_of(snap.now))
            self._push(self.t + self.scenario.stockouts_for(offer.site).fail_after_s, FAIL, job.index)
            return
        cash, voucher = d.facts.cash or 0.0, d.facts.voucher or 0.0
        # The vouchers the decision's split drew on (from the same balances, over the same run).
        run = (snap.now, snap.now + job.spec.runtime_estimate)
        money = self.ledger.money(job.tenant, snap.now)
        draws = voucher_for(self.policy, job.tenant, offer.site, money, (cash, voucher), run)
        st.reserved = (cash, voucher, draws, month_of(snap.now))
        self.ledger.add(job.tenant, st.reserved[3], cash, draws)
        self._push(
            self.t + self.clouds.provisioning_delay(offer.site, job.index, st.rec.attempts), UP, job.index
        )

    def _project(self, job: SimJob) -> tuple[Waits, LaunchQueue, Mapping[str, float], LateClaims]:
        """The job's projected waits, committed bursts, tenants' fair-share ratios and late claims."""
        ratios = self.share_ratios(job.tenant)
        return self.projected.project_job(job, self.t, ratios), self.launches, ratios, self.claims

    def share_ratios(self, tenant: str) -> dict[str, float]:
        """The tenants' fair-share ratios now, as the fair-share order reads them (`tenant` active)."""
        now = self.epoch + timedelta(seconds=self.t)
        return self.fair_ratios.at(self.t, tenant, lambda ts: self.fair.tenant_states(self.policy, now, ts))

    def _price(self, offer: Offer) -> float:
        return offer.price_per_hour * (self.policy.rate(offer.currency or self.policy.currency) or 0.0)

    def _settle(self, job: SimJob, st: SimState, *, hours: float) -> None:
        """Replace the reservation by the spend: price at decision time x hours running x nodes."""
        assert st.offer is not None
        hours *= job.spec.resources.nodes  # an instance per node of a gang, as live `estimate_cost` bills
        total = self._price(st.offer) * hours
        # (billed from up)
        run = (self.epoch + timedelta(seconds=st.running_since), self.epoch + timedelta(seconds=self.t))
        paid_cash, paid_voucher = self.ledger.settle(job.tenant, st.offer.site, st.reserved, total, run)
        st.rec.cost_cloud += total
        st.rec.cash += paid_cash
        st.rec.voucher += paid_voucher
        st.rec.carbon_g += carbon_g(self.policy, st.offer, hours)
        st.reserved = (0.0, 0.0, (), st.reserved[3])
