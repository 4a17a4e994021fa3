"""slurmrestd over HTTP: JWT handling and API version detection.

Transport failures and timeouts are `TransientError` and mark the client unhealthy
(``healthy`` / ``last_error``); HTTP 401/403 is `AuthError`; Slurm error codes in a reply's
``errors`` list go through the one table, `adapters.slurm._errors.SLURM_ERRORS`. slurmrestd
22.05 reports a rejected or expired JWT and an unreachable slurmctld alike as error -1 with HTTP
500 (or 5005, slurmctld hanging up): a token the client fetched itself is refreshed once and the
call retried, a token past its ``exp`` claim is `AuthError`, otherwise they are `TransientError`.

The REST API version is detected on first use from the paths slurmrestd serves
(``/openapi/v3``), newest first from `SUPPORTED_API_VERSIONS`, and again when slurmrestd no
longer serves it (restarted with other openapi plugins).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from adapters.base import (
    AdapterError,
    AuthError,
    ConfigError,
    NotFoundError,
    RequestError,
    TransientError,
)
from adapters.slurm._errors import TOKEN_ERRORS, error_for
from broker.model import SiteId

SUPPORTED_API_VERSIONS: tuple[str, ...] = ("v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38")
"""slurmrestd openapi plugin versions this adapter speaks, newest first (the one place)."""


class SlurmRest:
    """One slurmrestd endpoint: authenticated JSON requests under the detected API version.

    ``token``: a JWT to use as is; when None, ``scontrol token username=<user>
    lifespan=<token_lifespan_s>`` is run (with ``slurm_conf`` as SLURM_CONF if given) and
    re-run before the token expires or when slurmrestd refuses it. ``token_file``: where
    ``token`` came from; read again in those cases, so a rotated file needs no restart.
    A request ``as_user`` another user (a tenant's own) carries a token minted for that user
    the same way, which needs the broker to be root or SlurmUser and no fixed ``token``.
    """

    def __init__(
        self,
        site: SiteId,
        url: str,
        *,
        user: str = "root",
        token: str | None = None,
        token_file: str | None = None,
        token_lifespan_s: int = 3600,
        slurm_conf: str | None = None,
        api_version: str | None = None,
        timeout_s: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        if api_version is not None and api_version not in SUPPORTED_API_VERSIONS:
            raise ConfigError(site, "UnsupportedApiVersion",
                              f"api_version {api_version!r} not in {', '.join(SUPPORTED_API_VERSIONS)}")
        self.site = site
        self.url = url.rstrip("/")
        self.user = user
        self.timeout_s = timeout_s
        self.token_lifespan_s = token_lifespan_s
        self.slurm_conf = slurm_conf
        self._client = client or httpx.Client(timeout=timeout_s)
        # A token file counts as configured even while empty (the deployment recipe creates it
        # empty and fills it later): it is read again, never replaced by scontrol's tokens.
        self._configured_token = token if token or not token_file else ""
        self._token_file = token_file
        self._api_version = api_version
        self._pinned = api_version is not None  # the operator's: never detected again
        self._token: str | None = token
        self._token_expires: float | None = _jwt_expiry(token) if token else None
        self._token_lock = threading.Lock()
        self._user_tokens: dict[str, tuple[str, float]] = {}
        self.healthy = True
        self.last_error = ""

    def close(self) -> None:
        self._client.close()

    def version(self) -> str:
        """The API version in use (detected on first call, and after slurmrestd stopped serving it)."""
        if self._api_version is None:
            self._api_version = self._detect_version()
        return self._api_version

    def _detect_version(self) -> str:
        served: set[str] = set()
        try:
            spec = self.request("GET", "/openapi/v3", versioned=False)
            for path in spec.get("paths") or {}:
                m = re.match(r"^/slurm/(v\d+\.\d+\.\d+)/", str(path))
                if m:
                    served.add(m.group(1))
        except ConfigError:
            for version in SUPPORTED_API_VERSIONS:  # no spec served: probe
                try:
                    self.request("GET", f"/slurm/{version}/ping", versioned=False)
                except ConfigError:
                    continue
                return version
        for version in SUPPORTED_API_VERSIONS:
            if version in served:
                return version
        raise ConfigError(self.site, "NoSupportedApiVersion",
                          f"slurmrestd serves {sorted(served) or 'nothing'}; "
                          f"this adapter speaks {', '.join(SUPPORTED_API_VERSIONS)}")

    @property
    def mints_tokens(self) -> bool:
        """True when tokens come from ``scontrol token`` (so any user's can be had), not configured."""
        return self._configured_token is None

    def _user_headers(self, user: str, refresh: bool) -> dict[str, str]:
        """Headers with a token minted for `user`, kept until a minute before it expires."""
        if not self.mints_tokens:
            raise RequestError(self.site, "FixedToken",
                               f"the site's Slurm token is configured (token / token_from_file, for user "
                               f"{self.user!r}), so it cannot run jobs as {user!r} (tenants[].batch.user): "
                               "leave it unset and the broker mints one per user with scontrol token")
        with self._token_lock:
            token, expires = self._user_tokens.get(user, ("", 0.0))
            if refresh or expires - time.time() < 60:
                try:
                    token = self._scontrol_token(user)
                except AuthError as exc:  # this user's problem (or the broker's rights), not the site's
                    why = f"no Slurm token for user {user!r} (tenants[].batch.user): {exc}"
                    raise RequestError(self.site, "UserToken", why) from exc
                expires = _jwt_expiry(token) or time.time() + self.token_lifespan_s
                self._user_tokens[user] = (token, expires)
        return {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token}

    def _auth_headers(self, refresh: bool = False, user: str | None = None) -> dict[str, str]:
        if user is not None and user != self.user:
            return self._user_headers(user, refresh)
        with self._token_lock:
            stale = refresh or self._token is None or (
                self._token_expires is not None and self._token_expires - time.time() < 60)
            if self._configured_token is None and stale:
                self._token = self._scontrol_token()
                self._token_expires = _jwt_expiry(self._token) or time.time() + self.token_lifespan_s
            elif self._token_file is not None and (stale or not self._token):
                self._reread_token(self._token_file)
            token = self._token or ""
        if not token:
            raise AuthError(self.site, "NoToken", f"token_from_file {self._token_file} holds no token yet")
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": token}

    def _reread_token(self, path: str) -> None:
        """The token file's current JWT (rotated by the operator); the old one if unreadable."""
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError:
            return
        if text and text != self._token:
            self._token = self._configured_token = text
            self._token_expires = _jwt_expiry(text)

    def _scontrol_token(self, user: str | None = None) -> str:
        env = dict(os.environ)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        cmd = ["scontrol", "token", f"username={user or self.user}", f"lifespan={self.token_lifespan_s}"]
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=env, check=False)
        except FileNotFoundError as exc:
            raise ConfigError(self.site, "NoToken",
                              "no token configured and scontrol is not installed") from exc
        except subprocess.TimeoutExpired as exc:
            self._mark(False, "scontrol token timed out")
            raise TransientError(self.site, "TokenTimeout", "scontrol token timed out") from exc
        m = re.search(r"SLURM_JWT=(\S+)", out.stdout)
        if out.returncode != 0 or not m:
            # One line: it is logged, shown as the site's health and quoted in job reasons.
            lines = (line.strip() for line in (out.stderr or out.stdout).splitlines())
            said = " | ".join(line for line in lines if line)
            raise AuthError(self.site, "TokenFailed", f"scontrol token failed: {said[:300]}")
        return m.group(1)

    def _mark(self, healthy: bool, error: str = "") -> None:
        self.healthy = healthy
        self.last_error = error

    def request(
        self, method: str, path: str, *, payload: Any = None, versioned: bool = True,
        as_user: str | None = None, queued_ok: bool = False,
    ) -> dict[str, Any]:
        """One call; `as_user`: made as that user (a token minted for it) instead of the site's.
        `queued_ok`: a reply with errors and a job id is returned as is (see `_queued`)."""
        body = self._send(method, path, payload=payload, versioned=versioned, not_modified_ok=False,
                          as_user=as_user, queued_ok=queued_ok)
        assert body is not None  # only a not_modified_ok request answers None
        return body

    def get_if_changed(self, path: str) -> dict[str, Any] | None:
        """GET a versioned path; None when slurmrestd answers HTTP 304 Not Modified.

        slurmrestd 22.05 answers ``GET jobs?update_time=T`` with 304 and no body when
        slurmctld's job table has not changed since T (else with the *whole* table).
        """
        return self._send("GET", path, payload=None, versioned=True, not_modified_ok=True, as_user=None)

    def _send(
        self, method: str, path: str, *, payload: Any, versioned: bool, not_modified_ok: bool,
        as_user: str | None, queued_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One call (`_exchange`); a versioned path slurmrestd no longer serves detects the API
        version again, once (slurmrestd restarted with other openapi plugins: no broker restart)."""
        send = functools.partial(self._exchange, method, path, payload=payload, versioned=versioned,
                                 not_modified_ok=not_modified_ok, as_user=as_user, queued_ok=queued_ok)
        used = self.version() if versioned and not self._pinned else None
        try:
            return send()
        except ConfigError as exc:
            if exc.code != "NotServed" or used is None:
                raise
            if self._api_version == used:  # (unless another call has detected it again already)
                self._api_version = None
            if self.version() == used:
                raise  # the version is still served: this path is not
        return send()

    def _exchange(
        self, method: str, path: str, *, payload: Any, versioned: bool, not_modified_ok: bool,
        as_user: str | None, queued_ok: bool = False,
    ) -> dict[str, Any] | None:
        url = self.url + (f"/slurm/{self.version()}/{path}" if versioned else path)
        refreshed = False
        user = as_user or self.user
        while True:
            resp = self._http(method, url, payload, refresh=refreshed, user=as_user)
            can_refresh = (self.mints_tokens or self._token_file is not None) and not refreshed
            if resp.status_code in (401, 403):
                if can_refresh:
                    refreshed = True
                    continue
                self._mark(True)
                raise AuthError(self.site, f"HTTP{resp.status_code}",
                                f"slurmrestd refused the token for user {user!r}")
            if resp.status_code == 304 and not_modified_ok:
                self._mark(True)
                return None
            body = self._json_body(resp, method, url)
            errors = [e for e in body.get("errors") or [] if isinstance(e, Mapping)]
            coded = [(_error_code(e), e) for e in errors]
            coded = [(c, e) for c, e in coded if c != 0]
            if coded:
                code, first = coded[0]
                if code in TOKEN_ERRORS and can_refresh:
                    refreshed = True
                    continue
                if queued_ok and body.get("job_id") is not None:  # Slurm queued it all the same
                    self._mark(True)
                    return body
                raise self._slurm_error(code, first, f"{method} {path}")
            if resp.status_code >= 400:
                if resp.status_code == 404:
                    raise ConfigError(self.site, "NotServed", f"{method} {url}: not served by slurmrestd")
                self._mark(resp.status_code < 500, f"HTTP {resp.status_code}")
                cls = TransientError if resp.status_code >= 500 else AdapterError
                raise cls(self.site, f"HTTP{resp.status_code}", f"{method} {url}: {resp.text[:300]}")
            self._mark(True)
            return body

    def _http(
        self, method: str, url: str, payload: Any, *, refresh: bool, user: str | None
    ) -> httpx.Response:
        """One HTTP exchange; timeouts and transport failures become TransientError."""
        headers = self._auth_headers(refresh=refresh, user=user)
        try:
            return self._client.request(method, url, json=payload, headers=headers, timeout=self.timeout_s)
        except httpx.TimeoutException as exc:
            self._mark(False, f"timeout: {exc}")
            raise TransientError(self.site, "Timeout", f"{method} {url}: {exc!r}") from exc
        except httpx.TransportError as exc:
            self._mark(False, f"unreachable: {exc}")
            raise TransientError(self.site, "Unreachable", f"{method} {url}: {exc!r}") from exc

    def _json_body(self, resp: httpx.Response, method: str, url: str) -> dict[str, Any]:
        """The reply's JSON object; a reply that is not one is classified by its HTTP status."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            return body
        if resp.status_code == 404:  # an unknown URL, not an unknown job
            raise ConfigError(self.site, "NotServed", f"{method} {url}: not served by slurmrestd")
        if resp.status_code >= 500:
            self._mark(False, f"HTTP {resp.status_code}")
            raise TransientError(self.site, f"HTTP{resp.status_code}", resp.text[:300])
        raise AdapterError(self.site, "BadReply", f"{method} {url}: HTTP {resp.status_code}: "
                           f"{resp.text[:300]}")

    def _slurm_error(self, code: int, first: Mapping[str, Any], call: str) -> AdapterError:
        """The classified error for Slurm's first error code (-1 or 5005 with an expired JWT: AuthError)."""
        text = str(first.get("description") or first.get("error") or "")
        if code in TOKEN_ERRORS and self._token_expires is not None and self._token_expires < time.time():
            self._mark(True)
            return AuthError(self.site, "TokenExpired", "the configured Slurm JWT has expired")
        if code == -1:  # 22.05 says no more than "Unspecified error" for either cause
            text += (f"; slurmrestd could not get it from slurmctld (is slurmctld up?) "
                     f"or refused the JWT of {self.user!r}")
        err = error_for(self.site, code, f"{call}: {text}")
        self._mark(not isinstance(err, TransientError), str(err) if isinstance(err, TransientError) else "")
        return err


def _error_code(error: Mapping[str, Any]) -> int:
    for key in ("error_code", "error_number", "errno"):
        value = error.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return -1


def checked_job_id(site: SiteId, backend_id: str) -> str:
    if not re.fullmatch(r"\d+", backend_id):
        raise NotFoundError(site, "BadJobId", f"{backend_id!r} is not a Slurm job id")
    return backend_id


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (no signature check: only to know when to refresh)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    exp = data.get("exp") if isinstance(data, dict) else None
    return float(exp) if isinstance(exp, int | float) else None
