"""When a voucher pays: until the end of its `expires` day in Beijing time. Pure.

Placement's `voucher` term and the money split of a burst (`broker.burst.money`) both price a run
that outlasts its voucher by the part before it expires."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

from broker.policy.schema import Voucher

BEIJING = timezone(timedelta(hours=8))


def expires_at(voucher: Voucher) -> datetime | None:
    """The instant the voucher stops paying: the end of its `expires` day in Beijing time."""
    if voucher.expires is None:
        return None
    return datetime.combine(voucher.expires + timedelta(days=1), time.min, BEIJING)


def covered_part(voucher: Voucher, start: datetime, end: datetime) -> float:
    """The part of a run from `start` to `end` before the voucher expires (a run costs the same
    each hour, so that is the part of its cost the voucher may pay)."""
    ends = expires_at(voucher)
    if ends is None or end <= ends:
        return 1.0
    if start >= ends:
        return 0.0
    return (ends - start) / (end - start)


def month_span(month: str) -> tuple[datetime, datetime]:
    """The Beijing calendar month `YYYY-MM` (a budget month) as [start, end)."""
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=BEIJING)
    return start, datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=BEIJING)


def months_of(start: datetime, end: datetime) -> list[str]:
    """The Beijing budget months (`YYYY-MM`) a run from `start` to `end` touches, in order."""
    out = [start.astimezone(BEIJING).strftime("%Y-%m")]
    while (nxt := month_span(out[-1])[1]) < end:
        out.append(nxt.strftime("%Y-%m"))
    return out
