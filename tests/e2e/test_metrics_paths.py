"""The metrics port answers on `/metrics` only: any other path is 404, with or without an
operator's token. Found by a held-out review: `GET /foo` was 200 with every metric, so a
mistyped `metrics_path` in a scrape config looked right."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from broker.auth import Role, token_entry_line
from tests.brokerproc import BrokerProcess
from tests.clouds.test_metrics_e2e import OPERATOR, metrics_url
from tests.e2e.conftest import write_broker_config

NOT_FOUND = "not found: the metrics are on /metrics\n"


def status(url: str, token: str = "") -> tuple[int, str]:
    """The HTTP status and body of a GET of `url` (with `token` as a bearer token)."""
    asked = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(asked, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_only_the_metrics_path_is_served(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    with (tmp_path / "tokens.yaml").open("a") as tokens:
        tokens.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "prometheus") + "\n")
    broker = BrokerProcess(config, extra_env={"SZB_METRICS_LISTEN": "127.0.0.1:0"})
    broker.start()
    try:
        url = metrics_url(broker)
        base = url.removesuffix("/metrics")
        code, body = status(url, OPERATOR)
        assert code == 200 and "szb_queue_jobs" in body, body[:300]
        code, body = status(f"{url}?name[]=szb_policy_refused", OPERATOR)  # (Prometheus' filter still works)
        assert code == 200 and "szb_policy_refused" in body and "szb_queue_jobs" not in body, body[:300]
        assert status(url)[0] == 401
        for path in ("/foo", "/", "/metrics/", "/metricsx", "/favicon.ico"):
            for token in (OPERATOR, ""):
                code, body = status(base + path, token)
                assert (code, body) == (404, NOT_FOUND), (path, code, body[:200])
    finally:
        broker.stop()
