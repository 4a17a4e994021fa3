"""Accelerator names a job asks for that neither the policy nor any offer knows. Pure.

Submission refuses them as field errors (`Planner.vet`), and the offline `szb explain` says the
same, so a misspelt model is named as one there too, not only as "the job accepts H1OO"."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from broker.catalog.accelerators import normalize
from broker.model import JobSpec, Offer
from broker.policy import Policy
from broker.validation import FieldViolation, did_you_mean


def unknown_accelerators(spec: JobSpec, policy: Policy, offers: Iterable[Offer]) -> list[FieldViolation]:
    """A field violation for each of the job's `any_of` names the policy and the offers lack."""
    found = unknown_names(spec.resources.accelerators.any_of, policy, offers)
    return [FieldViolation(f"resources.accelerators.any_of[{i}]", why) for i, why in found]


def unknown_names(names: Sequence[str], policy: Policy, offers: Iterable[Offer]) -> list[tuple[int, str]]:
    """(index, why) of each accelerator name the policy and the offers lack."""
    known = {normalize(o.accelerator): o.accelerator for o in offers if o.accelerator}
    every = [*policy.accelerators.names(), *known.values()]
    return [
        # Model names are short: one wrong character of four is still a near miss.
        (i, f"unknown accelerator {name!r}{did_you_mean(name, every, cutoff=0.5)}")
        for i, name in enumerate(names)
        if policy.accelerators.get(name) is None and normalize(name) not in known
    ]
