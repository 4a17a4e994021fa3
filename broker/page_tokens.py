"""Page tokens tied to the filters of the listing that issued them (AIP-158): a token carried to a
listing of other filters would silently start it at a place the caller never saw."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from broker.audit_page import BadPageTokenError
from broker.model import JobState

_SEP = "~"
_PRINT = re.compile(r"[0-9a-f]{12}")


def filters_print(*filters: object) -> str:
    """A short fingerprint of a listing's filters (their reprs, in the order given)."""
    return hashlib.sha256(repr(filters).encode()).hexdigest()[:12]


def job_list_print(tenant: str, states: Sequence[JobState], labels: Mapping[str, str]) -> str:
    """The fingerprint of a ListJobs listing's filters (the request's tenant, states and labels)."""
    return filters_print(tenant, [s.value for s in states], sorted(labels.items()))


def bind(cursor: str, printed: str) -> str:
    """The token for the page after `cursor` of the listing whose filters `printed` fingerprints."""
    return f"{cursor}{_SEP}{printed}" if cursor else ""


def unbind(token: str, printed: str, cursor_shape: re.Pattern[str] | None = None) -> str:
    """The cursor of `token`, or BadPageTokenError: not a token issued here (or not of
    `cursor_shape`), or issued by a listing with other filters than the one `printed` fingerprints."""
    cursor, sep, tied = token.rpartition(_SEP)
    shaped = cursor_shape is None or cursor_shape.fullmatch(cursor)
    if not sep or not cursor or not shaped or not _PRINT.fullmatch(tied):
        raise BadPageTokenError("is not a token this server issued")
    if tied != printed:
        raise BadPageTokenError(
            "was issued for a listing with other filters: page on with the filters of its first page"
        )
    return cursor
