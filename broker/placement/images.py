"""Filter: a job with a container image runs only where the site's backend can run images.

Whether it can is the adapter's (a Slurm site needs its `container_runtime`, the local executor
runs commands only), so the dispatcher passes the sites that cannot, with their adapter's reason,
in `PlacementContext.no_images`. Without this a job with an image was placed there, its launch
failed, and that failure blocked the partition for every other job.
"""

from __future__ import annotations

from broker.placement._env import Env, Group
from broker.placement._filter import GroupKeep, GroupRejections, split_groups
from broker.placement.types import Reason

IMAGES = "site.images"


def _verdict(g: Group, env: Env) -> tuple[Reason, ...]:
    why = env.ctx.no_images.get(g.site_id)  # type: ignore[call-overload]
    if why is None:
        return ()
    return (Reason(IMAGES, f"site {g.site_id} cannot run the job's container image: {why}"),)


def filter_images(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """Drop groups at sites that cannot run the job's image (every group for a job without one)."""
    if not env.spec.image or not env.ctx.no_images:
        return groups, []
    return split_groups(groups, env, _verdict)


def keep_images(env: Env) -> GroupKeep | None:
    """`filter_images`'s kept groups (None: every group)."""
    lacking = env.ctx.no_images
    if not env.spec.image or not lacking:
        return None
    return lambda groups: [g for g in groups if g.site_id not in lacking]
