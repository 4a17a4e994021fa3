"""The broker's own settings (`broker.yaml`): where it listens, stores and finds its policy.

Deployment details (credentials, endpoints, data folders) live here; routing decisions live
in the policy file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from adapters._local_retention import KEY as KEEP_KEY
from adapters._local_retention import keep_duration
from broker.errors import BrokerError
from broker.numbers import NoBoolNumbers
from broker.validation import reported_errors, violations
from broker.yamlfile import PolicyError, parse_yaml, position


class ConfigFileError(BrokerError):
    """broker.yaml could not be read or is invalid; the message names the field."""


class DispatchSettings(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    poll_interval_s: float = Field(default=0.5, gt=0)
    """How often live attempts are polled at their backends."""
    requeue_scan_s: float = Field(default=15.0, gt=0)
    """Full re-decision of every queued job at least this often, even with no event."""
    queue_window: int = Field(default=10_000, ge=10)
    """A full pass over a queue deeper than this decides the first queued jobs (highest priority,
    then oldest) of each group of a tenant's jobs asking the same hardware, this many in all, split
    evenly among the groups; the rest are decided as those leave the queue."""
    reconcile_interval_s: float = Field(default=60.0, gt=0)
    """How often every site is listed for orphans and lost attempts."""
    backend_wait_s: float = Field(default=10.0, gt=0)
    """How long a read of a backend (status, listing, capacity, offers) is waited for; a site that
    has not answered by then is out of service until that call returns (`broker.bounded`)."""


class TlsSettings(NoBoolNumbers):
    """TLS for the gRPC port and the HTTP agent endpoint (`szb tls init DIR` makes a dev set)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    cert_file: Path
    """PEM certificate chain the broker presents (leaf first)."""
    key_file: Path
    """PEM private key of that certificate."""
    client_ca_file: Path | None = None
    """PEM CA bundle that client certificates must chain to (gRPC port only)."""
    require_client_cert: bool = False
    """Mutual TLS on the gRPC port: refuse callers without a certificate from `client_ca_file`.
    The agent endpoint never asks for one (instances prove themselves with their attempt secret)."""
    agent_ca_file: Path | None = None
    """CA bundle handed to cloud instances (in UserData) to verify the agent endpoint's
    certificate; None: instances use their system trust store."""

    @model_validator(mode="after")
    def _client_auth_needs_a_ca(self) -> TlsSettings:
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError("require_client_cert needs client_ca_file")
        if self.client_ca_file is not None and not self.require_client_cert:
            # gRPC can only ask for a client certificate and verify it, or not ask at all.
            raise ValueError("client_ca_file is only used with require_client_cert: true")
        return self

    def resolved(self, base: Path) -> TlsSettings:
        """Relative paths taken from `base` (the folder of broker.yaml)."""
        return self.model_copy(
            update={
                name: base / value
                for name in ("cert_file", "key_file", "client_ca_file", "agent_ca_file")
                if (value := getattr(self, name)) is not None
            }
        )


class HaSettings(NoBoolNumbers):
    """Leader election of the `scheduler` role (PostgreSQL advisory lock plus a lease)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    lease_s: float = Field(default=3.0, gt=0, le=60)
    """How long a leader's lease lasts without renewal; a standby takes over once it expired."""
    renew_s: float = Field(default=0.5, gt=0, le=10)
    """How often the leader renews its lease and a standby looks at it."""
    snapshot_refresh_s: float = Field(default=2.0, gt=0, le=60)
    """How often an `api` replica refreshes its admission snapshot (policy file, quotas)."""

    @model_validator(mode="after")
    def _renew_well_within_lease(self) -> HaSettings:
        if self.renew_s * 2 > self.lease_s:
            raise ValueError("renew_s must be at most half of lease_s")
        return self


class StoreSettings(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    dsn: str = Field(min_length=1)
    """PostgreSQL connection string (`postgresql://user@host:5432/db` or `key=value` form)."""


DEFAULT_DATA_DIR = Path(".szb")
"""Where `szb serve` keeps its store and records when no data_dir is given (relative to its folder)."""


class BrokerConfig(NoBoolNumbers):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    listen: str = "127.0.0.1:50051"
    data_dir: Path = DEFAULT_DATA_DIR
    policy: Path | None = None
    """Routing policy file; None uses the embedded single-host policy."""
    tokens_file: Path | None = None
    """Tokens file (hashes → tenants and roles); None runs with the single built-in dev tenant."""
    tokens_reload_s: float = Field(default=1.0, ge=0)
    """How often the tokens file is checked for changes (0: only on SIGHUP)."""
    durability: Literal["normal", "full"] = "normal"
    dispatch: DispatchSettings = DispatchSettings()
    store: StoreSettings | None = None
    """Shared PostgreSQL store; None keeps the embedded SQLite file `data_dir/broker.db`."""
    sites: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-site adapter settings merged over the policy's `adapter_config` (endpoints, keys)."""
    agent_http_listen: str | None = "127.0.0.1:0"
    """HOST:PORT of the HTTP agent endpoint bootstraps report to (None turns it off)."""
    agent_http_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Each read on an agent connection; a whole request must finish within twice this."""
    agent_http_max_connections: int = Field(default=64, ge=1, le=4096)
    """Agent connections served at once; more get 503 until one ends."""
    agent_http_max_per_client: int | None = Field(default=None, ge=1, le=4096)
    """Of those, what one client address may hold (default half); raise it behind a NAT or proxy."""
    agent_endpoint: str = ""
    """Address instances use to reach the agent endpoint; default: the HTTP endpoint's URL."""
    tls: TlsSettings | None = None
    """TLS on both listening ports; None serves plaintext (loopback only, or it warns)."""
    metrics_listen: str | None = None
    """HOST:PORT serving Prometheus metrics on `/metrics` (None: no metrics endpoint)."""
    log_format: Literal["text", "json"] = "text"
    """`text` for people, `json` (one object per line) for log collectors."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    role: Literal["all", "api", "scheduler"] = "all"
    """`all`: one process does everything (the embedded default); `api`: a stateless replica
    serving the RPCs; `scheduler`: a candidate for the one active decision loop (see broker/ha)."""
    ha: HaSettings = HaSettings()

    def absolute(self) -> BrokerConfig:
        """The same settings with every path made absolute against the current folder.

        Made absolute once at startup: the broker's children (local runners) run in other folders.
        """
        updates: dict[str, Any] = {"data_dir": self.data_dir.expanduser().resolve()}
        # Absolute, not resolved: the watched files keep their symlinks, followed at each read,
        # so a Kubernetes ConfigMap/Secret update (`..data` re-pointed) is seen like an edit.
        if self.policy is not None:
            updates["policy"] = self.policy.expanduser().absolute()
        if self.tokens_file is not None:
            updates["tokens_file"] = self.tokens_file.expanduser().absolute()
        return self.model_copy(update=updates)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_in_any_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("listen", "agent_http_listen", "metrics_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        """HOST:PORT with a port of 0-65535, told at load time with its field, not at bind time."""
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host.strip("[]"):
            raise ValueError(f"must be HOST:PORT with a port of 0-65535, not {value!r}")
        return value

    @model_validator(mode="after")
    def _agent_endpoint_matches_tls(self) -> BrokerConfig:
        # An instance told `http://` would speak plaintext to a TLS port and never report.
        if self.tls is not None and self.agent_endpoint.lower().startswith("http://"):
            raise ValueError("agent_endpoint: must be https:// (or HOST:PORT) when tls is set")
        return self

    def check_role(self) -> None:
        """ConfigFileError unless the role can run with these settings (after env and flags)."""
        # Replicas and standbys meet only in a shared database: SQLite is one process's file.
        if self.role != "all" and self.store is None:
            raise ConfigFileError(
                f"role {self.role!r} needs a PostgreSQL store: set store.dsn in broker.yaml or SZB_STORE_DSN"
            )

    def policy_path(self) -> Path:
        if self.policy is not None:
            return self.policy
        return Path(str(resources.files("broker") / "defaults" / "policy.yaml"))


ENV_SETTINGS: dict[str, str] = {
    "SZB_LISTEN": "listen",
    "SZB_DATA_DIR": "data_dir",
    "SZB_POLICY": "policy",
    "SZB_TOKENS_FILE": "tokens_file",
    "SZB_STORE_DSN": "store",
    "SZB_AGENT_HTTP_LISTEN": "agent_http_listen",
    "SZB_AGENT_ENDPOINT": "agent_endpoint",
    "SZB_METRICS_LISTEN": "metrics_listen",
    "SZB_LOG_FORMAT": "log_format",
    "SZB_LOG_LEVEL": "log_level",
    "SZB_ROLE": "role",
}
"""Environment variables that override broker.yaml (command-line flags override both)."""


def apply_env(config: BrokerConfig, environ: Mapping[str, str] | None = None) -> BrokerConfig:
    """broker.yaml's settings overridden by `SZB_*` variables (`VAR_FILE` reads VAR from a file).

    The `_FILE` form is for container secrets (`SZB_STORE_DSN_FILE=/run/secrets/pg_dsn`).
    """
    env = os.environ if environ is None else environ
    data = config.model_dump()
    changed = False
    for var, field in ENV_SETTINGS.items():
        value = env.get(var)
        if value is None and env.get(f"{var}_FILE"):
            try:
                value = Path(env[f"{var}_FILE"]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigFileError(f"{var}_FILE: {exc}") from exc
        if value is None:
            continue
        changed = True
        if field == "store":
            data["store"] = {"dsn": value} if value else None
        elif field in ("agent_http_listen", "metrics_listen", "policy", "tokens_file"):
            data[field] = value or None
        else:
            data[field] = value
    if not changed:
        return config
    try:
        return BrokerConfig.model_validate(data)
    except ValidationError as exc:
        lines = "; ".join(str(v) for v in violations(exc))
        raise ConfigFileError(f"environment: {lines}") from exc


def apply_flags(config: BrokerConfig, flags: Mapping[str, Any]) -> BrokerConfig:
    """`config` with `szb serve` flags (field name → value) set, checked as broker.yaml is.

    A ConfigFileError names the flag (`--listen: must be HOST:PORT ...`).
    """
    if not flags:
        return config
    # Validated, not model_copy(update=...): that skips every field check, so `--listen
    # 127.0.0.1:99999` served on port 34463.
    try:
        return BrokerConfig.model_validate({**config.model_dump(), **flags})
    except ValidationError as exc:
        lines = []
        for v in violations(exc):
            field = v.field.split(".", 1)[0].split("[", 1)[0]
            named = f"--{field.replace('_', '-')}" if field in flags else v.field
            lines.append(f"{named}: {v.description}" if named else v.description)
        raise ConfigFileError("; ".join(lines)) from exc


def site_settings(settings: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A site's broker.yaml settings with `KEY_from_file: PATH` / `KEY_from_env: VAR` read in.

    Keeps secrets (a Slurm JWT, cloud keys) out of broker.yaml: `token_from_file:
    /run/secrets/slurm_jwt` becomes `token: <the file's text>`, and the path stays under its
    key for adapters that read the file again (a rotated Slurm JWT). A missing file or variable
    raises ConfigFileError, which disables that one site (with the reason), not the broker.
    """
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if key.endswith("_from_file"):
            try:
                out[key.removesuffix("_from_file")] = Path(str(value)).read_text(encoding="utf-8").strip()
                out[key] = value
            except OSError as exc:
                raise ConfigFileError(f"{key}: cannot read {value}: {exc.strerror}") from exc
        elif key.endswith("_from_env"):
            if str(value) not in env:
                raise ConfigFileError(f"{key}: environment variable {value} is not set")
            out[key.removesuffix("_from_env")] = env[str(value)]
        else:
            out[key] = value
    return out


def _positioned(path: Path, exc: ValidationError) -> str:
    """`FILE:LINE:COL: field: problem` per error; a whole-document error points at the key its
    message starts with (e.g. `role`)."""
    try:
        root = parse_yaml(path.read_text(), str(path))
    except Exception:  # it parsed safely a moment ago; positions are a nicety
        root = None
    out = []
    for err, violation in zip(reported_errors(exc), violations(exc), strict=True):
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        first = violation.description.split(" ", 1)[0].rstrip(":")
        if not loc and isinstance(root, dict) and first in root:
            loc = [first]
        line, col = position(root, loc, key=True) if root is not None else (1, 1)
        out.append(f"{path}:{line}:{col}: {violation}")
    return "; ".join(out)


def _check_sites(path: Path, sites: Mapping[str, Mapping[str, Any]]) -> None:
    """Site keys with a form of their own, checked at load so the error names their line (a
    site's adapter would only be disabled, naming the key)."""
    for site, settings in sites.items():
        if settings.get(KEEP_KEY) is None:
            continue
        try:
            keep_duration(settings[KEEP_KEY])
        except ValueError as exc:
            root = parse_yaml(path.read_text(), str(path))
            line, col = position(root, ["sites", site, KEEP_KEY], key=True)
            raise ConfigFileError(
                f"{path}:{line}:{col}: sites.{site}.{KEEP_KEY}: {exc}, not {settings[KEEP_KEY]!r}"
            ) from exc


def load_config(path: Path | None) -> BrokerConfig:
    """Read broker.yaml; relative paths in it are relative to the file's folder."""
    if path is None:
        return BrokerConfig()
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigFileError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigFileError(f"{path}: {exc}") from exc
    try:
        data = YAML(typ="safe").load(text) or {}
    except YAMLError as exc:
        try:  # the round-trip parser says it in one `FILE:LINE:COL` line (a duplicate key...)
            parse_yaml(text, str(path))
        except PolicyError as marked:
            where = marked.problems[0]
            raise ConfigFileError(f"{where.file}:{where.line}:{where.col}: {where.message}") from exc
        mark = getattr(exc, "problem_mark", None)  # (an unknown tag: the round-trip parser takes it)
        at = f"{mark.line + 1}:{mark.column + 1}: " if mark is not None else ""
        what = " ".join(x for x in (getattr(exc, "context", None), getattr(exc, "problem", None)) if x)
        raise ConfigFileError(f"{path}:{at}YAML: {what or ' '.join(str(exc).split())}") from exc
    try:
        cfg = BrokerConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError(_positioned(path, exc)) from exc
    _check_sites(path, cfg.sites)
    base = path.parent
    updates: dict[str, Any] = {"data_dir": base / cfg.data_dir}
    if cfg.policy is not None:
        updates["policy"] = base / cfg.policy
    if cfg.tokens_file is not None:
        updates["tokens_file"] = base / cfg.tokens_file
    if cfg.tls is not None:
        updates["tls"] = cfg.tls.resolved(base)
    return cfg.model_copy(update=updates)
