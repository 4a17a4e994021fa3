"""Compile and check the CEL rules of a policy, reporting problems at file:line:col."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import cel

from broker.compliance.celenv import VARIABLES, literal_type_errors, referenced_paths, sample
from broker.compliance.rules import PLACEHOLDERS, CompiledRule, template_fields
from broker.policy._cel_values import unknown_values
from broker.policy.schema import Rule
from broker.yamlfile import Problem, position, value_origin

_CEL_POS = re.compile(r"<input>:(\d+):(\d+):")
_ID_LITERAL = re.compile(
    r"\b(site|tenant)\.id\s*[=!]=\s*[\"']([^\"']*)[\"']|[\"']([^\"']*)[\"']\s*[=!]=\s*(site|tenant)\.id"
)
_ID_IN_LIST = re.compile(r"\b(site|tenant)\.id\s+in\s*\[([^\]]*)\]")
_STRING = re.compile(r"[\"']([^\"']*)[\"']")


def _id_references(expr: str) -> list[tuple[str, str, int]]:
    """(`site` or `tenant`, the id, its offset) for each id literal the rule compares
    `site.id`/`tenant.id` with (==, != or `in [...]`)."""
    refs = [
        (m.group(1) or m.group(4), m.group(2) if m.group(1) else m.group(3), m.start())
        for m in _ID_LITERAL.finditer(expr)
    ]
    for m in _ID_IN_LIST.finditer(expr):
        refs += [(m.group(1), s.group(1), m.start(2) + s.start()) for s in _STRING.finditer(m.group(2))]
    return sorted(refs, key=lambda r: r[2])


class _Locator:
    """Maps a 0-based offset in a scalar's text to its 1-based position in the file."""

    def __init__(self, lines: list[str], doc: Any, loc: list[str | int]) -> None:
        self.line, self.col, self.style = value_origin(doc, loc)
        self.lines = lines

    def at(self, offset: int) -> tuple[int, int]:
        if self.style in ("|", ">"):
            first = self.line  # the indicator line; content starts on the next one
            body = [ln for ln in self.lines[first:]]
            indent = None
            for i, raw in enumerate(body):
                if not raw.strip():
                    offset -= 1
                    continue
                if indent is None:
                    indent = len(raw) - len(raw.lstrip(" "))
                text = raw[indent:]
                if offset <= len(text):
                    return first + i + 1, indent + offset + 1
                offset -= len(text) + 1
            return self.line, self.col
        quote = 1 if self.style in ("'", '"') else 0
        return self.line, self.col + quote + offset


def _offset(expr: str, line: int, col: int) -> int:
    lines = expr.split("\n")
    return sum(len(x) + 1 for x in lines[: line - 1]) + col - 1


class _Reporter:
    """Collects problems at file:line:col for one policy document."""

    def __init__(self, doc: Any, text: str, filename: str) -> None:
        self.doc = doc
        self.lines = text.split("\n")
        self.filename = filename
        self.problems: list[Problem] = []

    def __call__(self, loc: list[str | int], message: str, offset: int | None = None) -> None:
        if offset is None:
            line, col = position(self.doc, loc)
        else:
            line, col = _Locator(self.lines, self.doc, loc).at(offset)
        self.problems.append(Problem(self.filename, line, col, message))


_BASE: list[str | int] = ["compliance", "rules"]


def compile_rules(
    rules: tuple[Rule, ...],
    doc: Any,
    text: str,
    filename: str,
    site_ids: set[str],
    tenant_ids: set[str],
    default_deny: bool,
    known: Mapping[str, frozenset[str]] | None = None,
) -> tuple[list[CompiledRule], list[Problem]]:
    """Compile every rule once; check syntax, names, fields, types, references and templates."""
    problem = _Reporter(doc, text, filename)
    out: list[CompiledRule] = []
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        where = f"compliance.rules.{i}"
        if rule.id in seen:
            problem(
                [*_BASE, i, "id"],
                f"{where}.id: duplicate rule id {rule.id!r} (first at rules.{seen[rule.id]})",
            )
        seen.setdefault(rule.id, i)
        if (rule.deny is None) == (rule.allow is None):
            problem([*_BASE, i], f"{where}: a rule needs exactly one of 'deny' or 'allow'")
            continue
        effect = "deny" if rule.deny is not None else "allow"
        if effect == "allow" and not default_deny:
            problem(
                [*_BASE, i, effect],
                f"{where}.allow: allow rules have no effect while compliance.default is allow",
                0,
            )
        _check_scopes_and_reason(rule, i, effect, problem, site_ids, tenant_ids)
        compiled = _compile(rule, i, effect, problem, site_ids, tenant_ids, known or {})
        if compiled is not None:
            out.append(compiled)
    return out, problem.problems


def _check_scopes_and_reason(
    rule: Rule, i: int, effect: str, problem: _Reporter, site_ids: set[str], tenant_ids: set[str]
) -> None:
    """Scopes name declared sites and tenants; the reason is a valid template a person can read."""
    where = f"compliance.rules.{i}"
    for field, ids, kind in (("sites", site_ids, "site"), ("tenants", tenant_ids, "tenant")):
        for j, ref in enumerate(getattr(rule, field) or ()):
            if ref not in ids:
                problem([*_BASE, i, field, j], f"{where}.{field}.{j}: unknown {kind} {ref!r}")
    try:
        fields = template_fields(rule.reason)
    except ValueError as exc:
        problem([*_BASE, i, "reason"], f"{where}.reason: bad template: {exc}")
        fields = []
    for name in fields:
        if name not in PLACEHOLDERS:
            problem(
                [*_BASE, i, "reason"],
                f"{where}.reason: unknown placeholder {{{name}}} (known: {', '.join(sorted(PLACEHOLDERS))})",
            )
    if effect == "deny" and not rule.reason.strip():
        problem([*_BASE, i], f"{where}: a deny rule needs a 'reason' a person can read")


def _compile(
    rule: Rule,
    i: int,
    effect: str,
    problem: _Reporter,
    site_ids: set[str],
    tenant_ids: set[str],
    known: Mapping[str, frozenset[str]],
) -> CompiledRule | None:
    """The compiled rule, or None after reporting a syntax, name, reference or type problem."""
    where = f"compliance.rules.{i}.{effect}"
    expr = rule.deny if rule.deny is not None else rule.allow
    assert expr is not None
    loc: list[str | int] = [*_BASE, i, effect]
    try:
        program = cel.compile(expr)
    except ValueError as exc:
        msg = str(exc)
        m = _CEL_POS.search(msg)
        off = _offset(expr, int(m.group(1)), int(m.group(2))) if m else 0
        detail = _CEL_POS.sub("", msg.split("ERROR: ", 1)[-1].split("\n", 1)[0]).strip()
        problem(loc, f"{where}: CEL syntax error: {detail}", off)
        return None
    paths, errors = referenced_paths(expr)
    if not errors:
        errors = literal_type_errors(expr) or unknown_values(expr, known)
    for err in errors:
        problem(loc, f"{where}: {err.message}", err.offset)
    for kind, ref, offset in _id_references(expr):
        if ref not in (site_ids if kind == "site" else tenant_ids):
            problem(loc, f"{where}: unknown {kind} {ref!r}", offset)
    if errors or not _type_checks(program, where, loc, problem):
        return None
    return CompiledRule(
        id=rule.id,
        effect=effect,
        source=expr,
        program=program,
        reason=rule.reason,
        paths=tuple(dict.fromkeys(paths)),
        sites=frozenset(rule.sites) if rule.sites is not None else None,
        tenants=frozenset(rule.tenants) if rule.tenants is not None else None,
    )


def _type_checks(program: cel.Program, where: str, loc: list[str | int], problem: _Reporter) -> bool:
    """Run the rule on typed sample values: type errors and non-bool results are problems."""
    try:
        result: Any = program.execute({v: sample(v) for v in VARIABLES})
    except KeyError:
        result = False  # a map key absent from the empty sample map: fine at load time
    except Exception as exc:
        problem(loc, f"{where}: type error: {str(exc).split('. ')[0]}", 0)
        return False
    if not isinstance(result, bool):
        problem(loc, f"{where}: must evaluate to a bool, not {type(result).__name__}", 0)
        return False
    return True
