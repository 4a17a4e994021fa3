"""Checks of a broker request's fields that every RPC shares: ids, label filters, report times."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from broker.jobspec import LABEL_KEY_RULE, MAX_DEADLINE, may_be_label_key
from broker.rpc_errors import _BadRequest
from broker.serde import WireValueError, checked_timestamp
from broker.validation import FieldViolation

MAX_ID = 128
MAX_LABEL_FILTERS = 16
MAX_ACCELERATOR_FILTERS = 64
"""ListJobs matches at most this many labels at once (each one is a join)."""
PAGE_TOKEN = re.compile(r"j-[0-9a-f]{1,60}")
"""What ListJobs hands out as next_page_token: the last job id of the page (keyset paging)."""
MAX_LABEL_TEXT = 63


def label_filters(labels: Mapping[str, str]) -> dict[str, str]:
    """ListJobs' label filters, each bounded and of a key a job can have (INVALID_ARGUMENT naming
    the one refused)."""
    if len(labels) > MAX_LABEL_FILTERS:
        raise _BadRequest([FieldViolation("labels", f"at most {MAX_LABEL_FILTERS} label filters")])
    problems = [
        FieldViolation(f"labels.{key[:MAX_LABEL_TEXT]}", f"at most {MAX_LABEL_TEXT} characters")
        for key, value in labels.items()
        if len(key) > MAX_LABEL_TEXT or len(value) > MAX_LABEL_TEXT
    ] + [  # (an empty key, say: an empty list read as "no such jobs")
        FieldViolation(f"labels.{key}", f"not a label key: a label key is {LABEL_KEY_RULE}")
        for key in labels
        if len(key) <= MAX_LABEL_TEXT and not may_be_label_key(key)
    ]
    if problems:
        raise _BadRequest(problems[:10])
    return dict(labels)


def report_time(request: Any, name: str) -> datetime | None:
    """A report window's bound (`since`/`until`), None when unset; INVALID_ARGUMENT naming it.

    Capped as job deadlines are: near year 9999 the Beijing-time month arithmetic overflows.
    """
    if not request.HasField(name):
        return None
    try:
        value = checked_timestamp(getattr(request, name), name)
    except WireValueError as exc:
        raise _BadRequest([FieldViolation(exc.field, exc.description)]) from exc
    if value >= MAX_DEADLINE:
        raise _BadRequest([FieldViolation(name, f"must be before {MAX_DEADLINE.date().isoformat()}")])
    return value


def bounded_field(value: str, field: str) -> str:
    """An id-like filter (tenant, job id) of at most MAX_ID characters.

    Errors quote such values: an unbounded one would exceed gRPC's 16 KiB metadata limit and
    reach the client as RESOURCE_EXHAUSTED "Stream removed", naming nothing.
    """
    if len(value) > MAX_ID:
        raise _BadRequest([FieldViolation(field, f"must be at most {MAX_ID} characters")])
    return value


def checked_job_id(value: str) -> str:
    """A job id field: present and bounded."""
    if not value or len(value) > MAX_ID:
        raise _BadRequest([FieldViolation("id", "must be a job id")])
    return value
