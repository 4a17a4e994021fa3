"""Bearer tokens → principals (tenant + role). The tokens file stores only SHA-256 hashes.

The file is read again when it changes and on SIGHUP, so a revoked token stops working
without a restart; an invalid file is refused with FILE:LINE:COL errors and the last good
one stays in force.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from broker.errors import BrokerError
from broker.model import TenantId
from broker.policy.schema import ID_PATTERN
from broker.yamlfile import PolicyError, Problem, parse_yaml, read_text, validation_problems

log = logging.getLogger(__name__)

MAX_PROBLEMS_LOGGED = 20
"""Problems a refused file's one log line quotes (the rest are counted; `szb status` has all)."""

DEV_TENANT = TenantId("dev")


class AuthError(BrokerError):
    """No token, or a token nobody issued."""


class Role(StrEnum):
    TENANT = "tenant"
    """Sees and changes only its own tenant's jobs."""
    OPERATOR = "operator"
    """Runs the platform: lists, reads, watches and cancels every tenant's jobs; full status."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant they act for, their role, and a name for the audit trail."""

    tenant: TenantId
    role: Role = Role.TENANT
    name: str = ""

    @property
    def is_operator(self) -> bool:
        return self.role is Role.OPERATOR

    @property
    def who(self) -> str:
        """The name recorded in events and audit lines (the tenant when the token has none)."""
        return self.name or self.tenant

    def sees(self, tenant: str) -> bool:
        """Whether this caller may see a job, spend line or quota of `tenant`."""
        return self.is_operator or tenant == self.tenant


DEV_PRINCIPAL = Principal(DEV_TENANT, Role.OPERATOR, "dev")
"""Without a tokens file there is one (loopback) user, who is also the operator."""


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(pattern=ID_PATTERN)
    """The tenant this token acts for (jobs it submits belong to this tenant): an id a policy
    can declare, so a look-alike (a Cyrillic letter, a capital) is refused, not taken quietly."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the token (`szb token` prints the whole entry)."""
    client_cn: str | None = Field(default=None, min_length=1, max_length=255)
    """Instead of a token: the common name of a client certificate verified by mutual TLS."""
    role: Role = Role.TENANT
    name: str = Field(default="", max_length=128)
    """Who holds the token (a person or service), recorded with cancels; default: the tenant."""


    @model_validator(mode="after")
    def _one_credential(self) -> TokenEntry:
        if (self.sha256 is None) == (self.client_cn is None):
            raise ValueError("give exactly one of sha256 (a bearer token) or client_cn (a certificate)")
        return self


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[TokenEntry] = []


_ENTRIES = TypeAdapter(list[TokenEntry])


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_entry_line(tenant: str, token: str, role: Role = Role.TENANT, name: str = "") -> str:
    """One tokens-file entry, indented two spaces: appended as is to a file whose entries are so (or
    starting one); `append_token_entry` fits it to any layout."""
    extra = f", name: {_yaml_str(name)}" if name else ""
    return f'  - {{tenant: {_yaml_str(tenant)}, role: {role.value}, sha256: "{hash_token(token)}"{extra}}}'


_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"}
"""Plain scalars YAML may read as a boolean, null or number (1.1 or 1.2): quoted, or a name
`true` would be read as a boolean and refuse the whole tokens file."""


def _yaml_str(text: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", text) and text.lower() not in _YAML_WORDS:
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def append_token_entry(path: Path, entry: str) -> None:
    """Append `entry` (a `token_entry_line`) to the tokens file at `path` in its layout: at the
    indentation of its last entry, under `tokens:` or in a bare list; a new file gets `tokens:`.

    The result is read as the broker reads it before a byte is written: PolicyError otherwise.
    """
    item = entry.strip()
    if not path.exists():
        added, text = f"tokens:\n  {item}\n", ""
    else:
        text = read_text(path, "tokens file")
        root = parse_yaml(text, str(path))
        seq = root.get("tokens") if isinstance(root, CommentedMap) else root
        if isinstance(seq, CommentedSeq) and len(seq) and not seq.fa.flow_style():
            last = text.splitlines()[seq.lc.item(len(seq) - 1)[0]]
            added = " " * (len(last) - len(last.lstrip(" "))) + item + "\n"
        elif root is None or (isinstance(root, CommentedMap) and seq is None):  # comments or `tokens:`
            added = ("" if root is not None else "tokens:\n") + f"  {item}\n"
        elif isinstance(seq, CommentedSeq):  # `tokens: []`, `[...]`: one line holds them all
            raise PolicyError([Problem(str(path), seq.lc.line + 1, seq.lc.col + 1, "a `[...]` list: "
                                       "write its entries one `- ` line each to append to it")])
        else:
            tokens_from_text(text, str(path))  # (its own errors)
            raise PolicyError([Problem(str(path), 1, 1, "not a tokens file")])
        added = ("" if not text or text.endswith("\n") else "\n") + added
    tokens_from_text(text + added, str(path))
    # Appended, not replaced: a symlinked Secret, the file's owner and mode stay as they are.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(added)


def load_tokens(path: Path) -> list[TokenEntry]:
    """Read a tokens file (`tokens: [...]` or a bare list); PolicyError with FILE:LINE:COL."""
    return tokens_from_text(read_text(path, "tokens file"), str(path))


def tokens_from_text(text: str, name: str) -> list[TokenEntry]:
    """The entries of a tokens file's text (`name`: the file, for errors); as `load_tokens`."""
    root = parse_yaml(text, name)
    if root is None:  # (a save caught half-way by the poll must not lock every caller out)
        raise PolicyError([Problem(name, 1, 1, "the tokens file is empty: write `tokens: []` to refuse "
                                   "every caller on purpose")])
    items = root.get("tokens") if isinstance(root, CommentedMap) else root
    for entry in items if isinstance(items, CommentedSeq) else ():
        if isinstance(entry, CommentedMap):
            _keep_hash_text(entry, text.splitlines())
    try:
        if isinstance(root, CommentedSeq):  # a bare list: what `szb token` output alone makes
            entries = _ENTRIES.validate_python(root)
        else:
            entries = TokensFile.model_validate(root if root is not None else {}).tokens
    except ValidationError as exc:
        problems = validation_problems(exc, root, name)
        if isinstance(root, CommentedSeq):  # name fields as in the `tokens:` form
            problems = [Problem(p.file, p.line, p.col, f"tokens.{p.message}") for p in problems]
        raise PolicyError(problems) from exc
    seen: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        key = ("sha256", entry.sha256) if entry.sha256 is not None else ("client_cn", entry.client_cn or "")
        if key in seen:
            line, col = _entry_position(root, i)
            what = "token" if key[0] == "sha256" else "certificate name"
            message = f"tokens.{i}.{key[0]}: same {what} as tokens.{seen[key]}"
            raise PolicyError([Problem(name, line, col, message)])
        seen[key] = i
    if not entries:
        log.warning("tokens file %s lists no tokens: every caller is refused (UNAUTHENTICATED)", name)
    return entries


def _keep_hash_text(entry: CommentedMap, lines: list[str]) -> None:
    """A hash of only digits (or digits and one `e`) reads as a number: take its source text."""
    value = entry.get("sha256")
    if isinstance(value, str) or value is None or "sha256" not in entry.lc.data:
        return
    line, col = entry.lc.value("sha256")
    if line < len(lines):
        raw = re.match(r"[^\s,}#]*", lines[line][col:])
        entry["sha256"] = raw.group(0) if raw else str(value)


def _entry_position(root: Any, index: int) -> tuple[int, int]:
    seq = root if isinstance(root, CommentedSeq) else root.get("tokens")
    line, col = seq.lc.item(index)
    return line + 1, col + 1


class TokenAuthority:
    """Resolves `authorization: Bearer T` metadata to a Principal.

    With no tokens file the broker runs with a single built-in dev principal, and says so loudly.
    """

    def __init__(self, entries: Sequence[TokenEntry] | None, *, path: Path | None = None) -> None:
        self.dev_mode = entries is None
        self.path = path
        self.last_problems: list[Problem] = []
        self._lock = threading.Lock()
        self._digest = self._file_digest()
        self._by_hash, self._by_cn = self._index(entries or ())
        self.entries: tuple[TokenEntry, ...] = tuple(entries or ())
        self.on_change: Callable[[Sequence[TokenEntry]], None] | None = None
        """Called with the entries each time a reload puts different ones in force (the audit)."""
        self.on_reload: Callable[[str], None] | None = None
        """Called with each reload's result: loaded, unchanged or refused (the metrics)."""
        if self.dev_mode:
            log.warning(
                "NO TOKENS FILE: every caller is the built-in dev tenant %r (operator). "
                "Do not run this way with real users; set `tokens_file` in broker.yaml.",
                DEV_TENANT,
            )

    @staticmethod
    def _index(entries: Sequence[TokenEntry]) -> tuple[dict[str, Principal], dict[str, Principal]]:
        """(by token hash, by client certificate common name)."""
        by_hash, by_cn = {}, {}
        for e in entries:
            principal = Principal(TenantId(e.tenant), e.role, e.name or e.client_cn or "")
            if e.sha256 is not None:
                by_hash[e.sha256] = principal
            else:
                by_cn[e.client_cn or ""] = principal
        return by_hash, by_cn

    @property
    def uses_certificates(self) -> bool:
        """Whether some entry names a client certificate (callers' TLS identity is then read)."""
        return bool(self._by_cn)

    @classmethod
    def from_file(cls, path: Path | None) -> TokenAuthority:
        """Load `path` (None: dev mode); PolicyError when even the first file is invalid."""
        if path is None:
            return cls(None)
        return cls(load_tokens(path), path=path)

    @property
    def count(self) -> int:
        return len(self._by_hash) + len(self._by_cn)

    def _file_digest(self) -> str | None:
        if self.path is None:
            return None
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def reload(self) -> list[Problem]:
        """Read the file again; swap when valid, else keep the last good tokens and log why."""
        if self.path is None:
            return []
        with self._lock:
            self._digest = self._file_digest()
            try:
                entries = load_tokens(self.path)
            except PolicyError as exc:
                self.last_problems = exc.problems
                self._refused(exc.problems)
                return exc.problems
            mended, self.last_problems = bool(self.last_problems), []
            by_hash, by_cn = self._index(entries)
            if (by_hash, by_cn) == (self._by_hash, self._by_cn):
                self._tell("unchanged")
                if mended:  # the refusal logged as an error is over: say so
                    log.info("tokens file %s mended: the tokens in force again; its refusal is over",
                             self.path, extra={"event": "tokens_reload", "result": "unchanged"})
                return []
            # Each swap is one assignment: a lookup sees the old or the new map.
            self._by_hash, self._by_cn = by_hash, by_cn
            self.entries = tuple(entries)
            log.info("tokens file %s reloaded: %d entries", self.path, self.count,
                     extra={"event": "tokens_reload", "result": "loaded"})
        self._tell("loaded")
        if self.on_change is not None:
            self.on_change(entries)
        return []

    def _refused(self, problems: Sequence[Problem]) -> None:
        """One ERROR line for a refused file, its problems joined (as a refused policy's), and
        the count: a line per problem had no `event` to alert on."""
        shown = [str(p) for p in problems[:MAX_PROBLEMS_LOGGED]]
        more = len(problems) - len(shown)
        log.error("tokens reload refused: keeping the last good tokens file (%d entries): %s%s",
                  self.count, " | ".join(shown), f" | ... and {more} more" if more else "",
                  extra={"event": "tokens_reload", "result": "refused", "source": str(self.path)})
        self._tell("refused")

    def _tell(self, result: str) -> None:
        if self.on_reload is not None:
            self.on_reload(result)

    def poll(self) -> list[Problem] | None:
        """Reload when the file's content changed; None when it did not."""
        if self.path is None or self._file_digest() == self._digest:
            return None
        return self.reload()

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll the file until cancelled (run it as an asyncio task)."""
        while True:
            await asyncio.sleep(interval_s)
            await asyncio.to_thread(self.poll)

    def is_operator_header(self, authorization: str) -> bool:
        """Whether an HTTP `Authorization` value is an operator's bearer token (`/metrics`)."""
        try:
            return self.principal_for({"authorization": authorization}).is_operator
        except AuthError:
            return False

    def principal_for(self, metadata: Mapping[str, str], *, client_cn: str | None = None) -> Principal:
        """The caller; AuthError when the token is missing or unknown.

        `client_cn` is the common name of a client certificate the TLS layer verified; it
        identifies the caller when no bearer token is sent (a token, when sent, decides).
        """
        if self.dev_mode:
            return DEV_PRINCIPAL
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header and client_cn is not None:
            by_cert = self._by_cn.get(client_cn)
            if by_cert is None:
                raise AuthError("no tokens-file entry for this client certificate")
            return by_cert
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("missing bearer token in 'authorization' metadata")
        # Only hashes are kept, so a dict lookup on the hash leaks nothing about tokens.
        principal = self._by_hash.get(hash_token(token.strip()))
        if principal is None:
            raise AuthError("unknown token")
        return principal

    def tenant_for(self, metadata: Mapping[str, str]) -> TenantId:
        """The caller's tenant; AuthError when the token is missing or unknown."""
        return self.principal_for(metadata).tenant
