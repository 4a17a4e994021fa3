"""A page token reads back as the cursor it was made from, for each kind of entry a page can
end on. Review: tokens naming a job's event (source 2 once access entries came in) were refused
as "not a token this server issued", so a busy trail could not be read past its first page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from broker.audit_page import BadPageTokenError, decode, encode
from broker.store import ACCESS, EVENT, REFUSAL, AuditCursor

AT = datetime(2026, 12, 1, 8, 30, 15, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    "cursor",
    [
        AuditCursor(AT, EVENT, "j-1a248a7832a00008bead4", 7),
        AuditCursor(AT, ACCESS, "", 3 * 100_000 + 2),
        AuditCursor(AT, REFUSAL, "", 41),
    ],
)
def test_a_token_reads_back_as_its_cursor(cursor: AuditCursor) -> None:
    assert decode(encode(cursor)) == cursor


ALTERED = encode(AuditCursor(AT, EVENT, "j-1", 1))[:-3] + "!!!"


@pytest.mark.parametrize("token", ["", "not-a-token", "W10", ALTERED])
def test_anything_else_is_refused(token: str) -> None:
    with pytest.raises(BadPageTokenError):
        decode(token)
