"""An operator asks the live broker where another tenant's job would run (`szb explain --server
--tenant ID`); a tenant may only ask for itself. A real `szb serve` on the local executor.

Live explain always explained for the token's own tenant, so an operator answering "why does
lab-b's job wait?" could only guess offline, without the live capacity, money or fair share.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from broker.api import broker_service_pb2 as pb
from broker.api import job_pb2
from broker.auth import Role, token_entry_line
from broker.serde_explain import explanation_from_proto
from tests.brokerproc import BrokerProcess, running_broker, stub_for, szb, write_broker_folder

TOKENS = {"lab-a": "token-lab-a-0123456789", "lab-b": "token-lab-b-0123456789"}
OPERATOR = "token-operator-0123456789"
POLICY = """\
version: 1
currency: CNY
sites:
  - id: lab
    adapter: local
    country: CN
    residency: cn-mainland
    partitions:
      - {name: a800, accelerator: A800, count_per_node: 2, price_hour: 10.0}
tenants:
  - {id: lab-a, kind: university, entity_country: CN}
  - {id: lab-b, kind: university, entity_country: CN}
  - {id: ops, kind: internal, entity_country: CN}
compliance:
  residency:
    zones: {cn-mainland: {countries: [CN]}}
  rules:
    - id: lab-b-not-here
      deny: 'tenant.id == "lab-b" && site.id == "lab"'
      reason: "lab-b may not use {site}"
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    folder = tmp_path_factory.mktemp("explain-tenant")
    config = write_broker_folder(folder, POLICY, TOKENS)
    with (folder / "tokens.yaml").open("a") as tokens:
        tokens.write(token_entry_line("ops", OPERATOR, Role.OPERATOR, "alice") + "\n")
    with running_broker(config) as proc:
        yield proc


def ask(broker: BrokerProcess, token: str, tenant: str = "") -> dict[str, Any]:
    spec = job_pb2.JobSpec(name="ask", command=["true"], runtime_estimate=duration_pb2.Duration(seconds=600))
    spec.resources.accelerators.count = 1
    spec.resources.accelerators.any_of.append("A800")
    with stub_for(broker.address) as stub:
        got = stub.ExplainPlacement(
            pb.ExplainPlacementRequest(job=spec, tenant=tenant),
            metadata=(("authorization", f"Bearer {token}"),),
        )
    return explanation_from_proto(got.explanation)


def job_file(folder: Path) -> Path:
    path = folder / "job.yaml"
    path.write_text(textwrap.dedent("""\
        name: ask
        command: ["true"]
        resources:
          accelerators: {count: 1, any_of: [A800]}
        runtime_estimate: 10m
        """))
    return path


def test_an_operator_explains_for_the_tenant_it_names(broker: BrokerProcess) -> None:
    for_a, for_b = ask(broker, OPERATOR, "lab-a"), ask(broker, OPERATOR, "lab-b")
    assert for_a["chosen"] is not None
    assert for_b["chosen"] is None
    assert for_a["tenant"] == "lab-a" and for_b["tenant"] == "lab-b"
    assert "lab-b may not use lab" in json.dumps(for_b["rejections"])


def test_a_tenant_may_name_itself_only(broker: BrokerProcess) -> None:
    assert ask(broker, TOKENS["lab-b"], "lab-b")["chosen"] is None
    assert ask(broker, TOKENS["lab-a"])["chosen"] is not None  # empty: the caller's own
    with pytest.raises(grpc.RpcError) as err:
        ask(broker, TOKENS["lab-a"], "lab-b")
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert "lab-b" in (err.value.details() or "")


def test_an_undeclared_tenant_is_named(broker: BrokerProcess) -> None:
    with pytest.raises(grpc.RpcError) as err:
        ask(broker, OPERATOR, "lab-c")
    assert err.value.code() is grpc.StatusCode.NOT_FOUND
    assert "lab-c" in (err.value.details() or "") and "policy" in (err.value.details() or "")


def test_the_cli_passes_tenant_with_server(broker: BrokerProcess, tmp_path: Path) -> None:
    job = job_file(tmp_path)
    out = szb(broker, OPERATOR, "explain", str(job), "--tenant", "lab-b", "-o", "json")
    assert out.returncode == 1, out.stderr  # (no offer allowed, as offline)
    body = json.loads(out.stdout)
    assert body["tenant"] == "lab-b" and body["chosen"] is None
    table = szb(broker, OPERATOR, "explain", str(job), "--tenant", "lab-b")
    assert table.returncode == 1, table.stderr
    assert "for lab-b" in table.stdout and "lab-b may not use lab" in table.stdout
    # --policy stays an offline-only flag
    both = szb(broker, OPERATOR, "explain", str(job), "--policy", "configs/policy.yaml")
    assert both.returncode == 2 and "--policy" in both.stderr


def test_live_explain_gives_each_offer_its_price_read_time_as_offline_does(
    broker: BrokerProcess, tmp_path: Path
) -> None:
    """Review: offline `szb explain -o json` gave every offer (and `chosen`) its `price_read_at`;
    the live one, through `ExplainPlacement`, had none (the wire `ScoredOffer` lacked the field),
    so the same job's two explanations differed in shape and the live one hid how old a price was."""
    job = job_file(tmp_path)
    policy = broker.config.parent / "policy.yaml"
    offline = szb(broker, OPERATOR, "explain", str(job), "--policy", str(policy), "--tenant", "lab-a",
                  "-o", "json", env={"SZB_SERVER": ""})
    live = szb(broker, OPERATOR, "explain", str(job), "--tenant", "lab-a", "-o", "json")
    assert offline.returncode == 0 and live.returncode == 0, (offline.stderr, live.stderr)
    off, on = json.loads(offline.stdout), json.loads(live.stdout)
    assert "price_read_at" in off["chosen"]  # (what the live answer is held to)
    assert set(on["chosen"]) == set(off["chosen"]), set(off["chosen"]) ^ set(on["chosen"])
    assert all(o.get("price_read_at") for o in on["offers"]), on["offers"]
    assert on["chosen"]["price_read_at"] == on["decision"]["price_read_at"]
