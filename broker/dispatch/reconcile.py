"""Reconciliation: what each site says this broker owns vs what the store says is live.

At start and periodically: an instance carrying this broker's marks whose attempt is live but
has no backend id yet is adopted (the broker died between the cloud call and storing the id).
Anything else that still exists at the backend (running, or stopped but not deleted) and whose
attempt is not live is terminated: an orphan (attempt unknown) or the leftover of an attempt
that is over; so is a second instance of a live attempt (a deposed leader's late submit to a
backend without an idempotency token). Every action is recorded on the job it belongs to.

Races: the backend is listed first and live attempts are read after, so an attempt started
meanwhile is never taken for an orphan; an attempt that ended meanwhile is re-read from the
store and is never rewritten (only its instance is removed). A site that cannot be listed is
reported as unreachable, never raised: startup must not depend on every backend being up.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.base import Adapter, AdapterError, TransientError
from broker.clock import Clock
from broker.dispatch.gang import adoptable, is_gang_attempt
from broker.dispatch.offers import site_configs
from broker.model import Attempt, JobId, OwnedInstance, SiteId
from broker.policy import Policy
from broker.store import JobStore, StoreError
from broker.yamlfile import Problem

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """What one pass did, and which sites it could not reach (with why)."""

    adopted: int = 0
    terminated: int = 0
    unreachable: dict[SiteId, str] = field(default_factory=dict)
    reached: list[SiteId] = field(default_factory=list)
    not_terminated: dict[SiteId, AdapterError] = field(default_factory=dict)
    """Per site reached: the last error of an instance there that could not be terminated."""
    not_listed: dict[SiteId, Exception] = field(default_factory=dict)
    """Every site whose listing failed (unreachable or not), with its error: the caller logs it,
    once per outage, not once per pass."""


async def reconcile(
    store: JobStore,
    adapters: Mapping[SiteId, Adapter],
    clock: Clock,
    *,
    sites: set[SiteId] | None = None,
    launching: Collection[JobId] = (),
    stopping: Collection[str] = (),
    at_start: bool = False,
) -> ReconcileReport:
    """One pass over every site (or only `sites`); `launching`: jobs whose launch is in flight;
    `stopping`: attempts whose graceful stop (a preemption) is under way, left to it; `at_start`:
    the broker's first pass, where a site without credentials is out of service too."""
    report = ReconcileReport()
    chosen = [(site, a) for site, a in list(adapters.items()) if sites is None or site in sites]
    # All sites listed at once: a site slow to answer (up to the broker's backend wait) holds
    # the pass that long once, not once per site.
    listings = await asyncio.gather(
        *(asyncio.to_thread(adapter.list_owned) for _, adapter in chosen), return_exceptions=True
    )
    for (site, adapter), owned in zip(chosen, listings, strict=True):
        if isinstance(owned, BaseException):
            _not_listed(report, site, owned, at_start)
            continue
        report.reached.append(site)
        # Read live attempts after listing, so an attempt started meanwhile is never an orphan.
        by_token = {a.token: a for a in store.live_attempts()}
        for inst in owned:
            if inst.state.terminal and not inst.stopped:
                continue  # gone already, or a finished batch job that holds nothing
            attempt = by_token.get(inst.token or "")
            if attempt is not None and attempt.site == site:
                if _second_instance(attempt, inst):
                    report.terminated += await _remove_second(store, adapter, clock, attempt, inst)
                    continue
                idle = attempt.backend_id is None and attempt.job_id not in launching
                if idle and adoptable(store, adapter, attempt):
                    _adopt(store, clock, attempt, inst)
                    report.adopted += 1
                continue  # live: the poll follows it (and reads a stopped one's result)
            if inst.attempt_id in stopping:
                # Preempted (its attempt closed) and being given its grace: cancelling it now, before
                # the backend was told (Slurm's cut time limit marks it), would cut the grace to nothing.
                continue
            try:
                report.terminated += await _remove(store, adapter, clock, inst)
            except AdapterError as exc:
                report.not_terminated[site] = exc
    return report


def _not_listed(report: ReconcileReport, site: SiteId, exc: BaseException, at_start: bool) -> None:
    """A site whose listing failed: down (out of service with its reason, and retried), unless it
    was a later auth error. At start, no credentials or a wrong profile count too (the site stays
    out until a listing succeeds) rather than staying in service until a job's launch fails there;
    later, auth errors are the breaker's to find."""
    if not isinstance(exc, Exception):
        raise exc  # cancelled: the pass ends
    report.not_listed[site] = exc
    # An unmapped SDK error must not stop startup either.
    if not isinstance(exc, AdapterError) or at_start or isinstance(exc, TransientError):
        report.unreachable[site] = f"{type(exc).__name__}: {exc}"


def log_not_listed(site: SiteId, exc: Exception, logged_before: str | None) -> str:
    """Log a failed listing: a warning when the site's error is new (with a traceback for an
    unmapped SDK error), a debug line when it repeats. Returns what to compare the next with."""
    said = f"{type(exc).__name__}: {exc}"
    if said == logged_before:
        log.debug("reconcile: %s still could not be listed: %s", site, exc)
    elif isinstance(exc, AdapterError):
        log.warning("reconcile: %s could not be listed (said again only if this changes): %s", site, exc)
    else:
        log.error("reconcile: %s could not be listed (said again only if this changes)", site, exc_info=exc)
    return said


def unfollowed(live: Sequence[Attempt], sites: Collection[SiteId]) -> dict[SiteId, list[JobId]]:
    """Per site not among `sites`: the jobs with an attempt live there (started at a backend).

    The broker follows an attempt only through its site's adapter: a policy without that site
    would leave those jobs running unseen, their results never read.
    """
    out: dict[SiteId, list[JobId]] = {}
    for attempt in live:
        if attempt.site not in sites and attempt.backend_id is not None:
            out.setdefault(attempt.site, []).append(attempt.job_id)
    return out


def sites_in_use(
    store: JobStore, sites: Mapping[SiteId, str | None], path: str, text: str
) -> list[Problem]:
    """A policy file's problems for each site it lacks where jobs still run, and for each site it
    moves to another region (`sites` maps each site to its region; None: not the policy's to say)."""
    where = next((n for n, line in enumerate(text.splitlines(), 1) if line.startswith("sites:")), 1)
    live = store.live_attempts()  # read once for both checks
    problems = [
        Problem(path, where, 1,
                f"sites: {site!r} is gone, but {len(jobs)} job(s) still run there "
                f"({_some(jobs)}): the broker could "
                "neither follow them nor read their results; keep the site until they end, or "
                "cancel them first")
        for site, jobs in sorted(unfollowed(live, sites).items())
    ]
    for (site, old), jobs in sorted(moved(live, sites).items()):
        problems.append(Problem(
            path, _site_line(text, site, where), 1,
            f"sites: {site!r} moves from region {old!r} to {sites[site]!r}, but {len(jobs)} job(s) "
            f"still run in {old!r} ({_some(jobs)}): the broker would look for them in the new region, "
            "call them lost and run them again; keep the region until they end, cancel them first, "
            "or add the new region as another site"))
    return problems


def site_regions(
    policy: Policy, overrides: Collection[SiteId], settings: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[SiteId, str | None]:
    """Each site of `policy` with the region its adapter works in: broker.yaml's `sites:` (`settings`)
    over the policy's `adapter_config` over the site's `region` label (a label edited alone moves
    nothing). A site whose adapter is overridden (tests, embedding): None, its region is its own."""
    out: dict[SiteId, str | None] = {}
    for site_id, _, config in site_configs(policy):
        region = {**config, **(settings or {}).get(site_id, {})}.get("region")
        out[site_id] = region if isinstance(region, str) else None
    return out | dict.fromkeys(overrides)


def moved(
    live: Sequence[Attempt], sites: Mapping[SiteId, str | None]
) -> dict[tuple[SiteId, str], list[JobId]]:
    """Per (site, region) a policy moves that site away from: the jobs live there (an adapter
    finds an instance in its own region only: one launched in the old one reads as gone)."""
    out: dict[tuple[SiteId, str], list[JobId]] = {}
    for attempt in live:
        region, old = sites.get(attempt.site), attempt.offer.region
        if attempt.backend_id is not None and region and old and region != old:
            out.setdefault((attempt.site, old), []).append(attempt.job_id)
    return out


def _site_line(text: str, site: str, after: int) -> int:
    """The line of the policy text that declares `site` (`id: SITE`, block or flow style)."""
    declares = re.compile(rf"\bid:\s*['\"]?{re.escape(site)}['\"]?\s*(,|}}|$)")
    lines = enumerate(text.splitlines(), 1)
    return next((n for n, line in lines if n > after and declares.search(line)), after)


def _some(jobs: Sequence[JobId]) -> str:
    return ", ".join(jobs[:5]) + (", ..." if len(jobs) > 5 else "")


def _second_instance(attempt: Attempt, inst: OwnedInstance) -> bool:
    """An instance with a live attempt's token that is not the one the attempt follows.

    Slurm and the local executor have no idempotency token: a leader paused with its submit
    on the wire, replaced meanwhile, starts a second job for the attempt its successor already
    launched again. A gang's nodes and group carry its token but not its backend id: not these.
    """
    followed = attempt.backend_id
    return followed is not None and inst.backend_id != followed and not is_gang_attempt(attempt)


async def _remove_second(
    store: JobStore, adapter: Adapter, clock: Clock, attempt: Attempt, inst: OwnedInstance
) -> int:
    """Stop a second instance of a live attempt; the attempt and its own instance go on."""
    try:
        await asyncio.to_thread(adapter.cancel, inst.backend_id, inst.token or "")
    except Exception as exc:
        log.warning("reconcile: stopping duplicate %s at %s failed: %s", inst.backend_id, inst.site, exc)
        return 0
    log.warning(
        "reconcile: stopped %s at %s, a second instance of %s (which runs as %s)",
        inst.backend_id, inst.site, attempt.id, attempt.backend_id,
    )
    store.record(
        attempt.job_id,
        clock.now(),
        kind="duplicate_terminated",
        message=f"second instance {inst.backend_id} at {inst.site} of attempt {attempt.id} stopped "
        f"(the attempt runs as {attempt.backend_id})",
        data={"backend_id": inst.backend_id, "attempt": attempt.id},
    )
    return 1


def _adopt(store: JobStore, clock: Clock, attempt: Attempt, inst: OwnedInstance) -> None:
    now = clock.now()
    store.update_attempt(attempt.id, now, backend_id=inst.backend_id)
    store.record(
        attempt.job_id,
        now,
        kind="adopted",
        message=f"adopted {inst.backend_id} at {inst.site} (started before a crash)",
        data={"attempt": attempt.id, "backend_id": inst.backend_id},
    )


def _stored_attempt(store: JobStore, inst: OwnedInstance) -> Attempt | None:
    """The attempt the instance's marks name, as stored now (None: unknown to this store)."""
    if not inst.attempt_id:
        return None
    try:
        attempt = store.get_attempt(inst.attempt_id)
    except StoreError:
        return None
    return attempt if inst.token in (None, attempt.token) else None


async def _remove(store: JobStore, adapter: Adapter, clock: Clock, inst: OwnedInstance) -> bool:
    """Terminate an instance no live attempt owns; the attempt itself is never rewritten."""
    attempt = _stored_attempt(store, inst)
    if attempt is not None and not attempt.state.terminal:
        return False  # it became live after the listing (or lives at another site): not ours to end
    try:
        await asyncio.to_thread(adapter.cancel, inst.backend_id, inst.token or "")
    except AdapterError as exc:
        log.warning("reconcile: terminating %s at %s failed: %s", inst.backend_id, inst.site, exc)
        raise
    except Exception as exc:
        log.warning("reconcile: terminating %s at %s failed: %s", inst.backend_id, inst.site, exc)
        return False
    what = "stopped " if inst.stopped else ""
    now = clock.now()
    if attempt is not None:
        log.info("reconcile: removed %s%s of finished %s", what, inst.backend_id, attempt.id)
        kind, message = "terminated", f"{what}instance {inst.backend_id} at {inst.site} terminated"
        job_id: JobId | None = attempt.job_id
    else:
        log.warning("reconcile: terminated %sorphan %s at %s", what, inst.backend_id, inst.site)
        kind, message = "orphan_terminated", f"terminated {what}orphan {inst.backend_id} at {inst.site}"
        job_id = JobId(inst.job_id) if inst.job_id else None
    if job_id is not None:
        try:
            store.record(
                job_id,
                now,
                kind=kind,
                message=message,
                data={"backend_id": inst.backend_id, "attempt": inst.attempt_id},
            )
        except StoreError:  # the job may not exist in this store (another broker's)
            log.info("reconcile: %s names unknown job %s", inst.backend_id, job_id)
    return True
