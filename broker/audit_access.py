"""Who may call the broker, in the audit trail: each tokens file put in force is stored (no
secret: 12 hex digits of a token's hash tell tokens apart), and the audit shows what changed
from the set before it as kind `access` (a token added, removed, or given another role)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from broker.auth import TokenAuthority, TokenEntry
from broker.clock import Clock
from broker.store import JobStore, StoreError, TokenSet

log = logging.getLogger(__name__)

ACCESS_KIND = "access"
ACTOR = "tokens file"


def token_set(entries: Sequence[TokenEntry], source: str, time: datetime) -> TokenSet:
    """What is stored of a tokens file: each entry's key, tenant, role and name, sorted."""
    rows = {
        (f"sha256:{e.sha256[:12]}" if e.sha256 else f"cn:{e.client_cn}", e.tenant, e.role.value, e.name)
        for e in entries
    }
    return TokenSet(time=time, source=source, entries=tuple(sorted(rows)))


def audited_tokens(
    path: Path | None, store: JobStore, clock: Clock, on_reload: Callable[[str], None] | None = None
) -> TokenAuthority:
    """The tokens file's authority (`TokenAuthority.from_file`), its entries stored in the audit
    trail now and after every reload that changes them; `on_reload` hears each reload's result."""
    auth = TokenAuthority.from_file(path)
    auth.on_reload = on_reload
    if auth.dev_mode or path is None:
        return auth
    source = str(path)

    def record(entries: Sequence[TokenEntry]) -> None:
        try:
            store.record_token_set(token_set(entries, source, clock.now()))
        except StoreError as exc:  # the new tokens are in force whatever the store says
            log.error("tokens file %s: could not record it in the audit trail: %s", source, exc)

    auth.on_change = record
    record(auth.entries)
    return auth


@dataclass(frozen=True)
class AccessChange:
    """One entry of a tokens file that came, went or changed, against the set before it."""

    time: datetime
    key: tuple[int, int]
    """(the token set's id, the change's index in it): the order within one time."""
    tenant: str
    message: str
    tenants: frozenset[str]
    """The tenants it concerns (a token moved between tenants concerns both)."""


def _who(entry: tuple[str, str, str, str]) -> str:
    key, tenant, role, name = entry
    return f"{name or tenant} ({role} of {tenant}) [{key}]"


def access_changes(sets: Sequence[TokenSet], *, first_is_baseline: bool = False) -> list[AccessChange]:
    """What each set changed from the one before it (`sets` oldest first; the first set against
    nothing, unless it is only the baseline of a window), oldest first."""
    out: list[AccessChange] = []
    before: dict[str, tuple[str, str, str, str]] = {}
    for n, tokens in enumerate(sets):
        now = {e[0]: e for e in tokens.entries}
        changes: list[tuple[str, str, frozenset[str]]] = []
        for key in sorted(now.keys() - before.keys()):
            changes.append((now[key][1], f"token added: {_who(now[key])}", frozenset({now[key][1]})))
        for key in sorted(before.keys() - now.keys()):
            gone = before[key]
            changes.append((gone[1], f"token removed: {_who(gone)}", frozenset({gone[1]})))
        for key in sorted(now.keys() & before.keys()):
            if now[key] != before[key]:
                what = f"token changed: {_who(before[key])} is now {_who(now[key])}"
                changes.append((now[key][1], what, frozenset({now[key][1], before[key][1]})))
        if n or not first_is_baseline:
            out += [
                AccessChange(tokens.time, (tokens.id, i), t, m, ts) for i, (t, m, ts) in enumerate(changes)
            ]
        before = now
    return out
