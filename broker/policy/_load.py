"""Load a policy file: YAML -> schema -> referenced files -> cross-checks -> CEL -> Policy."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path

from pydantic import ValidationError

from broker.catalog.accelerators import AcceleratorCatalog, load_accelerators_text
from broker.catalog.instances import InstanceRow, parse_instance_csv
from broker.compliance.regime import RegimeSet, load_regimes_text
from broker.compliance.rules import RuleSet
from broker.policy._cel_check import compile_rules
from broker.policy._cel_values import known_values
from broker.policy._cross_check import (
    RANKERS,
    check_compliance,
    check_rank,
    check_sites,
    check_tenants,
    pick_regime,
)
from broker.policy._duplicates import check_duplicates
from broker.policy._fairshare_check import Report, check_fair_share
from broker.policy._policy import Policy
from broker.policy.schema import PolicyDocument
from broker.yamlfile import PolicyError, Problem, parse_yaml, position, read_text, validation_problems

__all__ = ["MAX_POLICY_BYTES", "RANKERS", "load_policy", "load_policy_text"]


MAX_POLICY_BYTES = 2**20
"""A policy file larger than this is refused: hundreds of tenants and rules take ~100 KB, and a
3 MB file took 33 s and 330 MB to check (a reload stalled explain calls meanwhile)."""


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file; raises PolicyError listing every problem."""
    return load_policy_text(read_text(path, "policy", MAX_POLICY_BYTES), str(path))


def load_policy_text(text: str, filename: str, stored: Mapping[str, str] | None = None) -> Policy:
    """Validate policy text; relative paths in it resolve against `filename`'s directory.

    `stored`: a stored version's files (name as `Policy.files` gives it -> text), read instead of
    the disk, so that a recorded version loads with what was in force, not what is there now."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    doc = parse_yaml(text, filename)
    if not isinstance(doc, dict):
        raise PolicyError([Problem(filename, 1, 1, "a policy must be a YAML mapping")])
    try:
        document = PolicyDocument.model_validate(doc)
    except ValidationError as exc:
        raise PolicyError(validation_problems(exc, doc, filename, model=PolicyDocument)) from exc
    base = Path(filename).resolve().parent  # (a symlinked policy's files sit beside its target)
    problems: list[Problem] = []

    def at(loc: list[str | int], message: str, *, key: bool = False) -> None:
        line, col = position(doc, loc, key=key)
        problems.append(Problem(filename, line, col, message))

    present = _presence(base, stored)
    inputs = _input_paths(document, base, present)
    # Each file is read once, and what is parsed is what is hashed and stored (read twice, an edit
    # between the reads would be decided on under the other text's hash).
    texts = _read_inputs(inputs, problems, base, stored)
    files = tuple((_file_name(p, base), t) for p, t in texts.items() if t is not None)
    inputs_digest = _digest(files)
    accelerators, regimes = _referenced_files(document, base, texts, at, problems, present)
    regime = pick_regime(document, regimes, at)
    site_ids = check_sites(document, accelerators, base, at, present)
    tenant_ids = check_tenants(document, regime, regimes, site_ids, at)
    check_compliance(document, regime, regimes, at)
    check_rank(document, at)
    check_fair_share(document, at)
    check_duplicates(document, at)

    comp = document.compliance
    instances = _instances(document, base, texts, problems)
    known = _known_values(document, accelerators, regimes, instances)
    compiled, cel_problems = compile_rules(
        comp.rules, doc, text, filename, set(site_ids), set(tenant_ids), comp.default == "deny", known
    )
    problems.extend(cel_problems)
    problems.sort(key=lambda p: (p.file != filename, p.file, p.line, p.col))
    if problems:
        raise PolicyError(problems)
    return Policy(
        hash=combined_hash(digest, inputs_digest),
        source=filename,
        document=document,
        accelerators=accelerators,
        regimes=regimes,
        regime=regime,
        rules=RuleSet(tuple(compiled), default_deny=comp.default == "deny"),
        instances=instances,
        inputs=tuple(map(str, inputs)),
        inputs_digest=inputs_digest,
        files=files,
    )


def combined_hash(text_sha256: str, inputs_digest: str) -> str:
    """The policy hash decisions record: the policy file's text and the files it refers to (an edit
    of accelerators.yaml alone can turn an export refusal into a placement)."""
    return hashlib.sha256(f"policy {text_sha256}\ninputs {inputs_digest}\n".encode()).hexdigest()


def _presence(base: Path, stored: Mapping[str, str] | None) -> Callable[[Path], bool]:
    """Whether a referenced file exists: on disk, or (a stored version) among its files only, so that
    a file added beside the policy since does not displace the bundled one the version used."""
    if stored is None:
        return Path.is_file
    return lambda path: _file_name(path, base) in stored


def _input_paths(document: PolicyDocument, base: Path, present: Callable[[Path], bool]) -> dict[Path, str]:
    """The accelerator and regime files (bundled ones when the policy names none beside it) and
    every catalog CSV, as `_referenced_files` and `_instances` resolve them: path -> what it is."""
    paths = {base / s.catalog.file: "catalog" for s in document.sites if s.catalog is not None}
    paths[_reference(document, base, "regimes", present)] = "regimes file"
    paths[_reference(document, base, "accelerators", present)] = "accelerator catalog"
    return paths


def _reference(document: PolicyDocument, base: Path, field: str, present: Callable[[Path], bool]) -> Path:
    ref = base / str(getattr(document, field))
    if field not in document.model_fields_set and not present(ref):
        ref = Path(str(resources.files("broker") / "defaults" / f"{field}.yaml"))
    return ref


def _read_inputs(
    paths: dict[Path, str], problems: list[Problem], base: Path, stored: Mapping[str, str] | None
) -> dict[Path, str | None]:
    """Each file's text; None for one missing (the cross-checks say so) or unreadable (a problem)."""
    texts: dict[Path, str | None] = {}
    for path, what in paths.items():
        texts[path] = None
        if stored is not None:
            texts[path] = stored.get(_file_name(path, base))
            continue
        if not path.is_file():
            continue
        try:
            texts[path] = read_text(path, what)  # (a byte that is not UTF-8: an error at its line)
        except PolicyError as exc:
            problems.extend(exc.problems)
    return texts


def _file_name(path: Path, base: Path) -> str:
    """How a stored version names a file: relative to the policy's folder, so that one set of files
    has one hash wherever its folder is (a copy for `szb explain`, each HA process's mount)."""
    bundled = Path(str(resources.files("broker") / "defaults"))
    for folder, prefix in ((base, ""), (bundled, "bundled:")):
        if path.is_relative_to(folder):
            return prefix + path.relative_to(folder).as_posix()
    return str(path)


def _digest(files: tuple[tuple[str, str], ...]) -> str:
    """sha256 over each file's name and text."""
    digest = hashlib.sha256()
    for name, text in files:
        data = text.encode("utf-8")
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _referenced_files(
    document: PolicyDocument,
    base: Path,
    texts: Mapping[Path, str | None],
    at: Report,
    problems: list[Problem],
    present: Callable[[Path], bool],
) -> tuple[AcceleratorCatalog, RegimeSet]:
    """Load the accelerator and regime files the policy names; raise if either is unusable.

    A policy that names neither file and has none beside it gets the broker's bundled ones
    (the embedded default's), so a minimal policy needs no copies of them."""
    accelerators: AcceleratorCatalog | None = None
    regimes: RegimeSet | None = None
    for field in ("accelerators", "regimes"):
        ref = _reference(document, base, field, present)
        text = texts.get(ref)
        if not present(ref):
            # (a copy of a policy saved in another folder, `szb policy show HASH > candidate.yaml`)
            at([field], f"{field}: file not found: {ref} (relative to the policy's folder; without "
                        f"this line the broker's bundled {field}.yaml is used)")
            continue
        if text is None:  # (unreadable: a problem already)
            continue
        try:
            if field == "accelerators":
                accelerators = load_accelerators_text(text, str(ref))
            else:
                regimes = load_regimes_text(text, str(ref))
        except PolicyError as exc:
            problems.extend(exc.problems)
    if accelerators is None or regimes is None:
        raise PolicyError(problems)
    return accelerators, regimes


def _known_values(
    document: PolicyDocument,
    accelerators: AcceleratorCatalog,
    regimes: RegimeSet,
    instances: Mapping[str, tuple[InstanceRow, ...]],
) -> dict[str, frozenset[str]]:
    """What each CEL string field with a known set of values can be under this policy."""
    names = {n for a in accelerators for n in (a.name, *a.aliases)}
    names |= {p.accelerator for s in document.sites for p in s.partitions if p.accelerator}
    names |= {r.accelerator for rows in instances.values() for r in rows if r.accelerator}
    families = {a.family for a in accelerators if a.family}
    classes = {c for regime in regimes.regimes for c in regime.class_names}
    return known_values(document, names, families, classes)


def _instances(
    document: PolicyDocument, base: Path, texts: Mapping[Path, str | None], problems: list[Problem]
) -> dict[str, tuple[InstanceRow, ...]]:
    """Each cloud site's catalog rows in its region; a bad row, or a row priced in a currency the
    policy has no fx rate for, is a problem at its line (listed with the policy's own)."""
    instances: dict[str, tuple[InstanceRow, ...]] = {}
    currencies = {document.currency, *document.fx}
    # Sites often share a catalog file (one per provider, a region each): read and check it once.
    read: dict[Path, list[InstanceRow] | None] = {}
    for site in document.sites:
        path = base / site.catalog.file if site.catalog is not None else None
        text = texts.get(path) if path is not None else None
        if site.catalog is None or path is None or text is None:
            continue  # (a missing file is the cross-check's problem; an unreadable one a problem already)
        if path not in read:
            try:  # (a row without a Currency cell is priced in its site's: filled in below)
                read[path] = parse_instance_csv(text, str(path), default_currency="")
            except PolicyError as exc:
                read[path] = None
                problems.extend(exc.problems)
        rows = read[path]
        if rows is None:
            continue
        kept = tuple(
            r if r.currency else replace(r, currency=site.catalog.currency)
            for r in rows
            if r.region == site.catalog.region
        )
        unpriced: dict[str, int] = {}
        for r in kept:
            if r.currency not in currencies and r.currency != site.catalog.currency:  # (that: the site's)
                unpriced.setdefault(r.currency, r.line)
        for currency, line in unpriced.items():
            said = f"Currency: no fx rate for {currency} (add it under fx)"
            problems.append(Problem(str(path), line, 1, said))
        instances[site.id] = kept
    return instances
