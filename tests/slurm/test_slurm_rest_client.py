"""`SlurmRest` against a stand-in slurmrestd (httpx.MockTransport): the client's own code runs
unchanged, only the server is fake, so it can answer what a live one does only now and then (an
error 5005 as its JWT expires)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx
import pytest

from adapters.base import AuthError, TransientError
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
