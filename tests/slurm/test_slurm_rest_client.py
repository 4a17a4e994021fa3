"""`SlurmRest` against a stand-in slurmrestd (httpx.MockTransport): the client's own code runs
unchanged, only the server is fake, so it can answer what a live one does only now and then (an
error 5005 as its JWT expires, a restart serving other API versions)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest

from adapters.base import AuthError, ConfigError, TransientError
from adapters.slurm import SlurmRest, error_for
from broker.model import SiteId

ZERO_BYTES = {"error_number": 5005, "error": "Zero Bytes were transmitted or received"}


def _jwt(exp: float) -> str:
    claims = base64.urlsafe_b64encode(json.dumps({"exp": int(exp)}).encode()).decode().rstrip("=")
    return f"e30.{claims}.sig"


def _rest(handle: httpx.MockTransport, token: str | None = None, token_file: str | None = None) -> SlurmRest:
    return SlurmRest(SiteId("s"), "http://slurm.test", user="alice", api_version="v0.0.38",
                     token=token, token_file=token_file, client=httpx.Client(transport=handle))


def test_error_5005_is_a_transient_error() -> None:
    """Found by a held-out review: 5005 ("Zero Bytes were transmitted or received", slurmrestd's
    answer to DELETE job/N as its JWT expired) was missing from the table: a plain AdapterError."""
    err = error_for("s", 5005, "DELETE job/7")
    assert type(err) is TransientError and err.code == "SLURM_PROTOCOL_SOCKET_ZERO_BYTES_SENT"


def test_5005_with_a_token_past_its_expiry_is_an_auth_error_and_else_transient() -> None:
    """Found by a held-out review (5005 as the JWT expired mid-run)."""
    answer = httpx.MockTransport(lambda r: httpx.Response(500, json={"errors": [ZERO_BYTES]}))
    with pytest.raises(AuthError) as expired:
        _rest(answer, token=_jwt(time.time() - 60)).request("DELETE", "job/7")
    assert expired.value.code == "TokenExpired"
    live = _rest(answer, token=_jwt(time.time() + 3600))
    with pytest.raises(TransientError):
        live.request("DELETE", "job/7")
    assert not live.healthy


def test_5005_rereads_a_rotated_token_file_once_and_retries(tmp_path: Path) -> None:
    """Found by a held-out review: a token that 5005 refused is fetched again, as for error -1."""
    token_file = tmp_path / "jwt"
    token_file.write_text("t-old")
    sent: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["X-SLURM-USER-TOKEN"])
        if sent[-1] == "t-old":
            token_file.write_text("t-new")  # the operator's rotation, seen on the retry
            return httpx.Response(500, json={"errors": [ZERO_BYTES]})
        return httpx.Response(200, json={"errors": []})

    rest = _rest(httpx.MockTransport(handle), token_file=str(token_file))
    assert rest.request("DELETE", "job/7") == {"errors": []}
    assert sent == ["t-old", "t-new"]


def _restarting_slurmrestd(served: list[str], seen: list[str]) -> httpx.MockTransport:
    """A slurmrestd serving only the API version `served[0]` (changed by the test: a restart)."""
    def handle(request: httpx.Request) -> httpx.Response:
        path, version = request.url.path, served[0]
        seen.append(path)
        if path == "/openapi/v3":
            paths = {f"/slurm/{version}/{p}": {} for p in ("ping", "jobs")}
            return httpx.Response(200, json={"paths": paths})
        if path == f"/slurm/{version}/ping":
            return httpx.Response(200, json={"errors": [], "pings": [{"pinged": "UP"}]})
        return httpx.Response(404, text="Unable find requested URL")
    return httpx.MockTransport(handle)


def test_a_slurmrestd_restarted_with_other_api_versions_is_detected_again() -> None:
    """Found by a held-out review: the version detected first was kept for good, and a slurmrestd
    restarted serving only another one answered every call "NotServed" until the broker restarted."""
    served, seen = ["v0.0.40"], []
    client = httpx.Client(transport=_restarting_slurmrestd(served, seen))
    rest = SlurmRest(SiteId("s"), "http://slurm.test", user="alice", token="t", client=client)
    rest.request("GET", "ping")
    assert rest.version() == "v0.0.40"
    served[0] = "v0.0.38"  # restarted: an older slurmrestd
    seen.clear()
    rest.request("GET", "ping")
    assert rest.version() == "v0.0.38"
    assert seen == ["/slurm/v0.0.40/ping", "/openapi/v3", "/slurm/v0.0.38/ping"], seen

    served[0] = "v0.0.37"  # one this adapter does not speak: said, once per call (no loop)
    seen.clear()
    with pytest.raises(ConfigError) as info:
        rest.request("GET", "ping")
    assert info.value.code == "NoSupportedApiVersion" and seen.count("/openapi/v3") == 1, seen
    served[0] = "v0.0.41"
    rest.request("GET", "ping")
    assert rest.version() == "v0.0.41"


def test_a_pinned_api_version_is_not_detected_again() -> None:
    """A configured api_version is the operator's: a slurmrestd that no longer serves it says so."""
    served, seen = ["v0.0.40"], []
    client = httpx.Client(transport=_restarting_slurmrestd(served, seen))
    rest = SlurmRest(SiteId("s"), "http://slurm.test", user="alice", token="t", client=client,
                     api_version="v0.0.39")
    with pytest.raises(ConfigError) as info:
        rest.request("GET", "ping")
    assert info.value.code == "NotServed" and "/openapi/v3" not in seen
