"""The audit trail's page tokens: the oldest entry of a page, so the next page starts after it."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta

from broker.errors import BrokerError
from broker.store import ACCESS, DRAIN, EVENT, REFUSAL, REFUSED_ACTION, AuditCursor

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_TOKEN = 1024


class BadPageTokenError(BrokerError, ValueError):
    """A page token this server did not issue (or one altered since)."""


def encode(cursor: AuditCursor) -> str:
    """An opaque token for the page after the one `cursor` ends."""
    micros = (cursor.time - _EPOCH) // timedelta(microseconds=1)
    raw = json.dumps([micros, cursor.source, cursor.job_id, cursor.seq], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str) -> AuditCursor:
    """The cursor `encode` made, or `BadPageTokenError`."""
    bad = BadPageTokenError("is not a token this server issued")
    if len(token) > _MAX_TOKEN:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        micros, source, job_id, seq = json.loads(raw)
        if not (
            isinstance(micros, int) and source in (EVENT, ACCESS, REFUSAL, DRAIN, REFUSED_ACTION)
            and isinstance(job_id, str) and isinstance(seq, int) and 0 <= seq < 2**63
            and not isinstance(source, bool)
        ):
            raise bad
        time = _EPOCH + timedelta(microseconds=micros)
    except (ValueError, TypeError, binascii.Error, OverflowError, UnicodeDecodeError) as exc:
        raise bad from exc
    return AuditCursor(time=time, source=source, job_id=job_id, seq=seq)
