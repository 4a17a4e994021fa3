"""Which on-prem partitions could run a job: those its tenant's quota is counted against. Pure."""

from __future__ import annotations

from broker.catalog.accelerators import normalize
from broker.model import JobSpec
from broker.policy import Policy


class Candidates:
    """On-prem partitions per job shape, remembered by policy version, tenant and shape."""

    def __init__(self) -> None:
        self._shapes: dict[tuple[str, str, str], tuple[str, ...]] = {}

    def __call__(self, policy: Policy, spec: JobSpec, tenant: str) -> tuple[str, ...]:
        """On-prem partitions whose hardware could run the job (quota is counted against these)."""
        acc = spec.resources.accelerators
        key = (policy.version, tenant, f"{acc.count}|{','.join(acc.any_of)}|{spec.resources.cpus}")
        found = self._shapes.get(key)
        if found is not None:
            return found
        t = policy.tenant(tenant)
        wanted = {normalize(n) for n in acc.any_of}
        out = []
        for site in policy.sites:
            if t is not None and t.allowed_sites is not None and site.id not in t.allowed_sites:
                continue
            for part in site.partitions:
                if acc.count == 0:
                    ok = part.accelerator is None and (
                        not part.cpus_per_node or part.cpus_per_node >= spec.resources.cpus
                    )
                else:
                    ok = (
                        part.accelerator is not None
                        and part.count_per_node >= acc.count
                        and (not wanted or bool(wanted & policy.hardware(part.accelerator).match_keys))
                    )
                if ok:
                    out.append(f"{site.id}/{part.name}")
        if len(self._shapes) > 10_000:
            self._shapes.clear()
        self._shapes[key] = found = tuple(out)
        return found
