"""Which sites cannot run a job's container image, as far as the policy alone says (offline tools).

Live, each site's adapter says so (`Capability.CONTAINER_IMAGES`, `PlacementContext.no_images`).
`szb explain --policy` and `szb policy test` build no adapter: without this they placed a job
with an image on a local site, which the live broker refuses. A local site never runs images;
a Slurm site runs them only with a `container_runtime`, which broker.yaml's `sites:` may also
set (offline tools read the policy only, and say so).
"""

from __future__ import annotations

from adapters.base import NO_IMAGES, NO_RUNTIME
from broker.model import SiteId
from broker.policy import Policy


def static_no_images(policy: Policy, *, unsure: bool = True) -> dict[SiteId, str]:
    """Each site of `policy` that cannot run a container image by its policy entry, with why;
    without `unsure`, only those sure not to (a local site: a Slurm site's runtime may be set in
    broker.yaml, and a replay of history must not refuse image jobs that ran there)."""
    out: dict[SiteId, str] = {}
    for site in policy.sites:
        if site.adapter == "local":
            out[SiteId(site.id)] = NO_IMAGES
        elif unsure and site.adapter == "slurm" and not site.adapter_config.get("container_runtime"):
            out[SiteId(site.id)] = f"{NO_RUNTIME} (in the policy; broker.yaml's sites: are not read offline)"
    return out
