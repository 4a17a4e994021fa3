"""Filter: hardware fit. Per group: accelerator model (`any_of`) and memory; per offer: count, CPUs, RAM."""

from __future__ import annotations

from broker.model import Offer
from broker.placement._env import Env, Group
from broker.placement._filter import GroupKeep, GroupRejections, OfferKeep, OfferRejections, split_groups
from broker.placement.types import Reason

FIT = "hardware.fit"


def _verdict(g: Group, env: Env) -> tuple[Reason, ...]:
    if env.count == 0:
        if g.accelerator is not None:
            return (
                Reason(
                    FIT,
                    f"the job needs no accelerator; this offer carries {g.accelerator} (it would sit idle)",
                ),
            )
        return ()
    if g.accelerator is None:
        return (Reason(FIT, f"the job needs {env.count} accelerator(s); this offer is CPU-only"),)
    if env.any_of and not (env.any_of & g.hw.match_keys):
        wanted = ", ".join(env.spec.resources.accelerators.any_of)
        return (Reason(FIT, f"the job accepts {wanted}; this offer has {g.accelerator}"),)
    if env.min_memory_gb:
        memory = g.offers[0].accelerator_memory_gb or (g.hw.spec.memory_gb if g.hw.spec else 0.0)
        if memory < env.min_memory_gb:
            return (
                Reason(
                    FIT,
                    f"{g.accelerator} has {memory:g} GB per device; the job needs {env.min_memory_gb:g} GB",
                ),
            )
    return ()


def filter_hardware_model(groups: list[Group], env: Env) -> tuple[list[Group], GroupRejections]:
    """Keep groups whose accelerator model and memory fit the job's request."""
    return split_groups(groups, env, _verdict)


def filter_hardware_size(g: Group, offers: list[Offer], env: Env) -> tuple[list[Offer], OfferRejections]:
    """Keep offers with enough accelerators, CPUs and memory (0 = the site did not say)."""
    count, cpus, mem = env.count, env.cpus, env.memory_gb
    kept: list[Offer] = []
    rejected: OfferRejections = []
    for o in offers:
        if o.count < count:
            rejected.append(
                (
                    o,
                    (
                        Reason(
                            FIT, f"{o.instance_type} has {o.count} x {o.accelerator}; the job needs {count}"
                        ),
                    ),
                )
            )
        elif o.cpus and o.cpus < cpus:
            rejected.append(
                (o, (Reason(FIT, f"{o.instance_type} has {o.cpus:g} CPUs; the job needs {cpus:g}"),))
            )
        elif o.memory_gb and o.memory_gb < mem:
            rejected.append(
                (
                    o,
                    (
                        Reason(
                            FIT, f"{o.instance_type} has {o.memory_gb:g} GB of memory; the job needs {mem:g}"
                        ),
                    ),
                )
            )
        else:
            kept.append(o)
    return kept, rejected


def keep_hardware_model(env: Env) -> GroupKeep:
    """`filter_hardware_model`'s kept groups: `_verdict`'s tests without its messages (a job
    asking for memory rejects most groups, and each message is a formatted sentence)."""
    if env.count == 0:
        return lambda groups: [g for g in groups if g.accelerator is None]
    any_of, need = env.any_of, env.min_memory_gb

    def fits(g: Group) -> bool:
        if g.accelerator is None or (any_of and not (any_of & g.hw.match_keys)):
            return False
        if need:
            memory = g.offers[0].accelerator_memory_gb or (g.hw.spec.memory_gb if g.hw.spec else 0.0)
            return not memory < need
        return True

    return lambda groups: [g for g in groups if fits(g)]


def keep_hardware_size(env: Env) -> OfferKeep:
    """`filter_hardware_size`'s kept offers, without reasons."""
    count, cpus, mem = env.count, env.cpus, env.memory_gb
    # The three fields read from the offer's field mapping (kept by grouping; a pydantic
    # attribute read costs ~5 mapping subscripts). Same tests as the filter.
    return lambda pairs: [
        (g, kept)
        for g, offers in pairs
        if (
            kept := [
                o
                for o, d in zip(offers, g.field_maps(offers), strict=True)
                if not (
                    d["count"] < count
                    or ((c := d["cpus"]) and c < cpus)
                    or ((m := d["memory_gb"]) and m < mem)
                )
            ]
        )
    ]
