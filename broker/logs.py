"""The broker's log lines: text or JSON, with job/tenant/site fields, and secrets redacted.

Call sites pass their fields as `extra={"job_id": ..., "tenant": ..., "site": ..., "rules": [...]}`;
the formatters print them (`key=value` in text, keys of the object in JSON). Every record goes
through `redact` first, so a token, an agent secret or a credential never reaches a log.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

FIELDS = (
    "event",
    "job_id",
    "job_name",
    "tenant",
    "by",
    "site",
    "attempt_id",
    "state",
    "exit_code",
    "action",
    "offer",
    "rules",
    "policy_hash",
    "error",
    "next",
    "source",
    "price",
    "currency",
    "used",
    "budget",
    "alert_fraction",
    "result",
    "reason",
)
"""Structured fields the broker's log calls may carry (in this order in text lines)."""

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"(?i)(token|secret|password|passwd|credential|access_key|api_key|private_key|authorization"
    r"|(?:^|_)(?:pass|pwd)(?:_|$))"
)
# No pattern may take time quadratic in a string's length. A match is tried at every start,
# so what a failed try scans must not run on over the next try's ground: a repetition stops at
# the next place a match could start (`(?:(?!://)\S)`), or starts only where one can (a literal
# key word, not `[a-z_]*token`, which made a 60,000-letter env value take 83 s of the event
# loop: a hostile spec, refused at submit, froze every tenant's calls). Secrets stay unbounded.
URL_PASSWORD = re.compile(
    r"(://[^:/@\s]*:)(?!\d+(?:[/?#\s]|$))(?:(?!://)\S)*?@(?=[^@\s/?#]*(?:[/?#\s]|$))"
)
"""`scheme://user:password@host`, group 1 up to the password: it runs to the last '@' before the
host (people write '/' and '@' in passwords without percent-encoding them; not `://`); digits
then '/' or the end are a port. The logs and the store's DSN redaction
(`broker.store.snapshot`) share it."""
_PATTERNS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Not the plain word (`missing bearer token in ...`, the broker's own refusal): a credential
    # that starts with it (`token-team-a-...`) runs on past it and is masked.
    (re.compile(r"(?i)\b(bearer\s+)(?!tokens?[.:)]?(?:[\s\"',;]|$))[^\s\"',;]+"), rf"\1{REDACTED}"),
    (
        re.compile(
            # (A key's letters before `token`/`secret` stay in the text unmatched: `HF_TOKEN=x`
            # keeps `HF_` and masks x.)
            r"(?i)((?:token|secret(?:(?!secret)[a-z_])*|password|passwd|access_key_id|private_key|"
            r"accesskeyid|api_key|x-slurm-user-token|authorization)[\"']?\s*[:=]\s*)"
            # Not a validation message's next word (`tokens.3.secret: unknown field 'secret'` read
            # `[REDACTED] field`); a quoted value whole, spaces and all (`password='hunter two'`).
            r"(?!(?:unknown|must|missing|required|expected|invalid|not|is|cannot)\b)"
            r"(?:([\"'])[^\"'\n]*[\"']?|[^\s\"',;}&]+)"
        ),
        lambda m: f"{m[1]}{m[2] or ''}{REDACTED}{m[2] or ''}",
    ),
    (URL_PASSWORD, rf"\1{REDACTED}@"),
    (re.compile(r"\b(AKIA|ASIA|LTAI)[0-9A-Za-z]{12,}\b"), REDACTED),
    # JWTs; a header stops where another could start (`-eyJ`).
    (re.compile(r"\beyJ(?:(?!-eyJ)[0-9A-Za-z_-]){8,}\.[0-9A-Za-z_-]+\.[0-9A-Za-z_-]+"), REDACTED),
)


def redact_credentials(text: str) -> str:
    """`text` with what is a credential whatever surrounds it masked (URL passwords, bearer tokens,
    cloud keys, JWTs), not `key: value` pairs: for words meant for a person, where `page_token: is
    not a token this server issued` lost its `is`."""
    for i, (pattern, repl) in enumerate(_PATTERNS):
        if i != 1:
            text = pattern.sub(repl, text)
    return text


def redact(text: str) -> str:
    """`text` with bearer tokens, key=secret pairs, URL passwords, cloud keys and JWTs masked."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def secret_key(name: str) -> bool:
    """True for a setting's name that says its value is a secret (token, password, key...)."""
    return bool(_SECRET_KEY.search(name.lstrip("-").replace("-", "_")))


def _redact_value(key: str, value: Any) -> Any:
    if secret_key(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):  # (an argv: `--password X` masks X)
        flags = ["", *(v if isinstance(v, str) and v.startswith("-") and "=" not in v else "" for v in value)]
        return [_redact_value(flag, v) for flag, v in zip(flags, value, strict=False)]
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


def redact_data(value: Any) -> Any:
    """`value` (JSON-like) masked as log fields are: values under secret-looking keys, and
    secrets inside strings (what a stored copy of a job spec needs, its env above all)."""
    return _redact_value("", value)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: _redact_value(name, getattr(record, name))
        for name in FIELDS
        if getattr(record, name, None) not in (None, "", [], ())
    }


def _message(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text = f"{text}\n{logging.Formatter().formatException(record.exc_info)}"
    return redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        out.update(_fields(record))
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: message key=value ...` for people reading a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {_message(record)}"
        parts = []
        for key, value in _fields(record).items():
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            parts.append(f"{key}={json.dumps(text) if ' ' in text else text}")
        return f"{line} {' '.join(parts)}" if parts else line


NOISY_LOGGERS = {
    "apscheduler": logging.WARNING,
    "botocore": logging.WARNING,
    "urllib3": logging.WARNING,
    "httpx": logging.WARNING,
    # Alibaba's credential chain logs a stack trace per lookup on a handler of its own; the
    # broker says once, itself, that the site has no credentials (status, metrics, log).
    "credentials": logging.CRITICAL,
    "alibabacloud_credentials": logging.CRITICAL,
}
"""Third-party loggers and the least level they may log at."""


def quiet_third_party() -> None:
    """Send noisy SDK loggers through our handler only, at their least level.

    Call again after importing SDKs that attach handlers of their own at import time.
    """
    root_level = logging.getLogger().level
    for name, least in NOISY_LOGGERS.items():
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
        logger.setLevel(max(least, root_level))


def configure(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Route every log record to `stream` (stderr) in `fmt`, at `level` and above; `say` lines
    are JSON records too under `json`."""
    global _say_json
    _say_json = fmt == "json"
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet_third_party()


_say_json = False
"""`configure`d for JSON logs: a pipeline reading stdout as records choked on plain `szb:` lines."""


def says_json() -> bool:
    """`say` writes JSON records (the log is JSON)."""
    return _say_json


def say(line: str, stream: TextIO | None = None, *, event: str | None = None) -> None:
    """One `szb: ...` line on stdout for operators and whatever reads it (the test harness takes
    the port from one), written whole: `print` writes the text and its newline apart, and a log
    line from another thread landed between them ("serving on port 116772026-12-03 ...").
    Under `--log-format json`, a JSON record as the log's (logger `szb`, with `event`)."""
    out = stream if stream is not None else sys.stdout
    if _say_json:
        record = logging.LogRecord("szb", logging.INFO, __file__, 0, line, None, None)
        record.event = event
        out.write(f"{JsonFormatter().format(record)}\n")
    else:
        out.write(f"szb: {line}\n")
    out.flush()
