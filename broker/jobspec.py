"""The job spec: the user's unit of work as written in a job YAML or sent on the wire, validated.

Every field is checked on the way in (name, argv, environment, labels, image, durations,
deadline), so a stored spec can always be read back and run. `broker.model` re-exports it.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationInfo, field_validator

from broker.durations import Duration, DurationTooLong, format_duration, parse_duration, whole_seconds
from broker.imageref import check_image


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class SpotMode(StrEnum):
    NEVER = "never"
    ALLOWED = "allowed"
    REQUIRED = "required"


class Residency(StrEnum):
    CN_MAINLAND = "cn-mainland"
    ANY = "any"


_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
_LABEL_KEY = re.compile(r"^[a-z0-9]([a-z0-9_.\-/]{0,61}[a-z0-9])?$")
LABEL_KEY_RULE = "1-63 chars of [a-z0-9_.-/], beginning and ending with a letter or digit"


def may_be_label_key(key: str) -> bool:
    """Whether a job can carry a label of this key (a stored one too, under the looser old rule):
    a filter on any other key matches nothing."""
    return _LABEL_KEY.match(key) is not None


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters (Unicode category Cc: C0, DEL and C1)."""
CONTROL_CHARACTER = "must not contain a control character"
"""How a free-text field with a line break, NUL or escape sequence in it is refused."""


def has_control_character(text: str) -> bool:
    """Whether `text` holds a control character: stored text a listing or log prints must not.

    A line break forges lines in one-line listings and logs, an escape sequence rewrites an
    operator's terminal, and PostgreSQL text holds no NUL.
    """
    return _CONTROL.search(text) is not None


_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})
"""Format characters (bidi overrides, zero-width spaces, BOM) and line/paragraph separators."""


def identifier_problem(text: str) -> str | None:
    """Why `text` cannot name something a tenant refers to (an accelerator, a client_id), or None.

    Beyond control characters: an invisible, bidi or separator character, or whitespace at an
    end, makes a name that reads as another ("A800\u202e" listed as A800) and that lookups
    ignoring separators would still take for it. The character is named by its code point (U+202E).
    """
    if has_control_character(text):
        return CONTROL_CHARACTER
    bad = next((ch for ch in text if unicodedata.category(ch) in _INVISIBLE), None)
    if bad is not None:
        return f"must not contain {_named(bad)}, an invisible or formatting character"
    if text != text.strip():
        end = text[0] if text[0].isspace() else text[-1]
        return f"must not begin or end with whitespace ({_named(end)})"
    return None


def _named(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


STORED = {"stored": True}
"""Validation context of a spec read back from the store: rules added after a job could have been
stored (they refuse new input at the edge) must not make an accepted job unreadable."""
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED_ENV_PREFIX = "SZB_"
"""The broker's bootstrap and executors set `SZB_*` variables; a job may not override them."""

# Hard ceilings, whatever the policy says; per-tenant limits (broker.quota) are lower.
MAX_ARGV = 4096
MAX_ENV = 4096
MAX_LABELS = 1024
MAX_ANY_OF = 64
_FINER_THAN_MICROSECOND = re.compile(r"\d:\d\d[.,]\d{6}0*[1-9]")
MAX_RUNTIME_ESTIMATE = timedelta(days=90)
RUNTIME_TOO_LONG = f"must be at most {format_duration(MAX_RUNTIME_ESTIMATE)}"
MIN_DEADLINE = datetime(1970, 1, 1, tzinfo=UTC)
MAX_DEADLINE = datetime(9000, 1, 1, tzinfo=UTC)


def _key_matcher(pattern: re.Pattern[str], info: ValidationInfo) -> Callable[[str], object]:
    """How an env name or label key is checked: whole, at the edge. `$` also matches before a
    final line break, which `match` let through (a boot script's line ended early); a stored
    spec keeps that looser rule, so a job accepted under it still reads back."""
    stored = bool(info.context and info.context.get("stored"))
    return pattern.match if stored else pattern.fullmatch


class _SpecPart(BaseModel):
    # inf/nan would be written to JSON as null and fail every later read (a poison row). Numbers
    # are strict (StrictInt/StrictFloat): lax mode reads YAML's `count: true` as one GPU.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class AcceleratorRequest(_SpecPart):
    """How many accelerators of which models a job needs; count 0 means none."""

    count: StrictInt = Field(default=0, ge=0, le=1024)
    any_of: tuple[str, ...] = Field(default=(), max_length=MAX_ANY_OF)
    min_memory_gb: StrictFloat = Field(default=0, ge=0, le=1_000_000)

    @field_validator("any_of")
    @classmethod
    def _names_not_blank(cls, v: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if any(not name.strip() for name in v):
            raise ValueError("accelerator names must not be empty")
        if any(len(name) > 128 for name in v):
            raise ValueError("accelerator names must be at most 128 characters")
        stored = bool(info.context and info.context.get("stored"))  # accepted before this rule
        problem = None if stored else next(filter(None, map(identifier_problem, v)), None)
        if problem is not None:
            raise ValueError(f"accelerator names {problem}")
        return v


class Resources(_SpecPart):
    """Per node: accelerators, CPUs and memory; `nodes` > 1 is a gang placed all-or-nothing."""

    accelerators: AcceleratorRequest = AcceleratorRequest()
    cpus: StrictFloat = Field(default=1, gt=0, le=4096)
    memory_gb: StrictFloat = Field(default=1, gt=0, le=65536)
    nodes: StrictInt = Field(default=1, ge=1, le=256)


class Checkpoint(_SpecPart):
    """How often the job saves its progress (a restart resumes from the last checkpoint)."""

    interval: Duration

    @field_validator("interval")
    @classmethod
    def _interval_positive(cls, v: timedelta) -> timedelta:
        if v <= timedelta(0):
            raise ValueError("must be > 0")
        return whole_seconds(v)


class JobSpec(_SpecPart):
    """The user's unit of work, exactly as written in a job YAML or sent on the wire."""

    name: str = Field(pattern=_NAME, min_length=1, max_length=63)
    command: tuple[str, ...] = Field(min_length=1, max_length=MAX_ARGV)
    image: str | None = Field(default=None, min_length=1, max_length=512)
    env: dict[str, str] = Field(default_factory=dict, max_length=MAX_ENV)
    resources: Resources = Resources()
    runtime_estimate: Duration
    max_wait: Duration | None = None
    deadline: datetime | None = None
    priority: Priority = Priority.NORMAL
    spot: SpotMode = SpotMode.ALLOWED
    max_price_per_hour: StrictFloat | None = Field(default=None, gt=0)
    data_residency: Residency = Residency.ANY
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LABELS)
    checkpoint: Checkpoint | None = None

    @field_validator("command")
    @classmethod
    def _argv0_not_blank(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v[0].strip():
            raise ValueError("the program (first argument) must not be empty")
        if any("\x00" in arg for arg in v):
            raise ValueError("arguments must not contain NUL bytes")
        return v

    @field_validator("env")
    @classmethod
    def _env_keys(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        matches = _key_matcher(_ENV_KEY, info)
        for key, value in v.items():
            if not matches(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.upper().startswith(RESERVED_ENV_PREFIX):
                raise ValueError(
                    f"{key}: names starting with {RESERVED_ENV_PREFIX} are reserved for the broker"
                )
            if "\x00" in value:
                raise ValueError(f"{key}: value must not contain NUL bytes")
        return v

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        stored = bool(info.context and info.context.get("stored"))
        matches = _key_matcher(_LABEL_KEY, info)
        for key, value in v.items():
            if not matches(key):
                raise ValueError(f"label key {key!r} must be {LABEL_KEY_RULE}")
            if len(value) > 63:
                raise ValueError(f"label {key}: value longer than 63 characters")
            if not stored and has_control_character(value):
                raise ValueError(f"label {key}: value {CONTROL_CHARACTER}")
        return v

    @field_validator("image")
    @classmethod
    def _image_reference(cls, v: str | None) -> str | None:
        return None if v is None else check_image(v)

    @field_validator("runtime_estimate", mode="before")
    @classmethod
    def _runtime_past_any_duration(cls, v: object) -> object:
        try:
            return parse_duration(v)
        except DurationTooLong:
            # (`1000000d` said "at most 10 years", every duration's bound, not this field's)
            if isinstance(v, int | float) and v < 0:
                raise ValueError("must be > 0") from None
            if isinstance(v, float) and math.isnan(v):
                raise
            raise ValueError(RUNTIME_TOO_LONG) from None

    @field_validator("runtime_estimate")
    @classmethod
    def _runtime_positive(cls, v: timedelta) -> timedelta:
        return check_runtime_estimate(v)

    @field_validator("checkpoint", mode="before")
    @classmethod
    def _checkpoint_is_a_mapping(cls, v: Any) -> Any:
        if isinstance(v, str | int | float) and not isinstance(v, bool):
            raise ValueError(f"must be a mapping such as {{interval: {v}}}")
        return v

    @field_validator("max_wait")
    @classmethod
    def _wait_not_negative(cls, v: timedelta | None) -> timedelta | None:
        if v is not None and v < timedelta(0):
            raise ValueError("must be >= 0")
        return None if v is None else whole_seconds(v)

    @field_validator("deadline", mode="before")
    @classmethod
    def _deadline_exact(cls, v: object) -> object:
        if isinstance(v, str) and _FINER_THAN_MICROSECOND.search(v):
            # (a datetime keeps microseconds: the rest was dropped, as the wire refuses it)
            raise ValueError("must be a whole number of microseconds (at most 6 digits after the seconds)")
        return v

    @field_validator("deadline")
    @classmethod
    def _deadline_has_zone(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        if v.tzinfo is None:
            raise ValueError("must include a UTC offset, e.g. 2026-12-01T00:00:00+08:00")
        try:
            utc = v.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError("must be between 1970-01-01 and 9000-01-01") from exc
        if not MIN_DEADLINE <= utc < MAX_DEADLINE:
            raise ValueError("must be between 1970-01-01 and 9000-01-01")
        # Kept in UTC, so the stored text and the wire Timestamp name the same instant.
        return utc

    @property
    def accelerator_count(self) -> int:
        return self.resources.accelerators.count


def submission_problems(spec: JobSpec) -> list[tuple[tuple[str, ...], str]]:
    """(field path, message) of what a submitted spec must not have beyond each field's own
    checks; a stored spec with it still reads back (it would be quarantined otherwise)."""
    out: list[tuple[tuple[str, ...], str]] = []
    acc = spec.resources.accelerators
    if acc.count == 0 and (acc.any_of or acc.min_memory_gb):
        # count 0 means no accelerator: the models and memory asked for would be dropped unread,
        # and the job run CPU-only
        asked = "any_of" if acc.any_of else "min_memory_gb"
        out.append((("resources", "accelerators", "count"),
                    f"must be >= 1 when {asked} is given (count 0, or no count, runs the job with no "
                    "accelerator)"))
    cp = spec.checkpoint
    if cp is not None and cp.interval >= spec.runtime_estimate:
        out.append((
            ("checkpoint", "interval"),
            f"must be shorter than runtime_estimate ({format_duration(spec.runtime_estimate)}): "
            "a job that saves no checkpoint within its run restarts from zero, as without one",
        ))
    return out


def check_runtime_estimate(v: timedelta) -> timedelta:
    """A runtime estimate as `JobSpec` accepts it (> 0, at most 90 days, whole seconds); ValueError else."""
    if v <= timedelta(0):
        raise ValueError("must be > 0")
    if v > MAX_RUNTIME_ESTIMATE:
        raise ValueError(RUNTIME_TOO_LONG)
    return whole_seconds(v)


def spec_from_mapping(data: Mapping[str, Any]) -> JobSpec:
    """Validate a mapping (YAML or wire) into a JobSpec; raises pydantic.ValidationError."""
    return JobSpec.model_validate(dict(data))
