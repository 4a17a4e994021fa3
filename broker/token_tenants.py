"""Tenant tokens that act for a tenant the policy does not declare: warned of at start and after
each tokens or policy reload. Such a token authenticates, but every submit of it is refused
(`tenant X is not declared in the policy`), so the slip showed only when a user tried.
Operator tokens are left out: an `ops` tenant no policy declares is their usual form."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

from broker.auth import Role, TokenAuthority, TokenEntry
from broker.policy import Policy

log = logging.getLogger(__name__)


def undeclared(entries: Iterable[TokenEntry], declared: Iterable[str]) -> dict[str, list[str]]:
    """Tenant -> the names of its tokens, for each tenant the tenant-role tokens name and
    `declared` does not."""
    known = set(declared)
    out: dict[str, list[str]] = {}
    for e in entries:
        if e.role is Role.TENANT and e.tenant not in known:
            # (no secret: 12 hex digits of the hash tell tokens apart, as the audit trail shows them)
            who = e.name or (f"cn:{e.client_cn}" if e.client_cn else f"sha256:{(e.sha256 or '')[:12]}")
            out.setdefault(e.tenant, []).append(who)
    return dict(sorted(out.items()))


def warn_undeclared(auth: TokenAuthority, policy: Policy) -> None:
    """One WARNING naming the tokens file, each undeclared tenant and its tokens (none: silent)."""
    if auth.dev_mode:
        return
    found = undeclared(auth.entries, (t.id for t in policy.tenants))
    if not found:
        return
    named = "; ".join(f"{t} (token{'s' if len(w) > 1 else ''} {', '.join(w)})" for t, w in found.items())
    log.warning(
        "tokens file %s names tenants not declared in the policy (%s): %s; their tokens "
        "authenticate but every submit is refused: declare the tenants or remove the tokens",
        auth.path, policy.hash[:12], named,
        extra={"event": "tokens_tenant_undeclared", "source": str(auth.path)},
    )


def watch_token_tenants(auth: TokenAuthority, policy: Callable[[], Policy]) -> Callable[[], None]:
    """Warn now and after each tokens reload that changes them; returns the check to run after
    each policy swap."""
    recorded = auth.on_change

    def tokens_changed(entries: Sequence[TokenEntry]) -> None:
        if recorded is not None:  # (the audit trail's record comes first)
            recorded(entries)
        warn_undeclared(auth, policy())

    auth.on_change = tokens_changed
    warn_undeclared(auth, policy())
    return lambda: warn_undeclared(auth, policy())
