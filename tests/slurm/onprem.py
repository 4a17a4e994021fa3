"""A broker whose on-prem site is the real Slurm test cluster (scripts/slurm-cluster.sh).

Shared by tests/slurm/test_broker_on_slurm.py and bench/slurm_overhead.py.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc, job_pb2
from broker.auth import hash_token
from tests.brokerproc import copy_hardware_files

SITE = "shangzhuang-onprem"
TOKENS = {"team-a": "token-team-a-0123456789"}

POLICY = """\
version: 1
currency: CNY
objective: {{price: 1.0, wait_hour_cost: 40}}
accelerators: accelerators.yaml
regimes: regimes.yaml
sites:
  - id: {site}
    adapter: slurm
    country: CN
    residency: cn-mainland
    partitions:
      - {{name: ascend, accelerator: Ascend910B, count_per_node: 4, price_hour: 6.0, cpus_per_node: 16}}
      - {{name: a800, accelerator: A800, count_per_node: 4, price_hour: 14.0, cpus_per_node: 16}}
      - {{name: cpu, price_hour: 0.5, cpus_per_node: 16, nodes: 2}}
    adapter_config: {adapter_config}
tenants:
  - {{id: team-a, kind: university, entity_country: CN}}
compliance:
  residency:
    zones: {{cn-mainland: {{countries: [CN]}}}}
"""


def write_onprem_config(
    folder: Path,
    cluster_env: dict[str, str],
    *,
    broker_id: str,
    poll_interval_s: float = 0.2,
    reconcile_interval_s: float = 5.0,
) -> Path:
    """broker.yaml + policy (one Slurm site) + tokens in `folder`; returns the broker.yaml path.

    The policy carries the slurmrestd address, user and this broker's job marks; the JWT goes
    into broker.yaml's ``sites`` (merged over the policy's adapter_config, kept out of the
    policy hash). `broker_id` must be unique per broker sharing the cluster: reconciliation
    cancels jobs marked with it that the broker does not know.
    """
    folder.mkdir(parents=True, exist_ok=True)
    copy_hardware_files(folder)
    adapter_config = {
        "url": cluster_env["SZB_SLURM_URL"],
        "user": cluster_env.get("SZB_SLURM_USER", "root"),
        "broker_id": broker_id,
        "output_dir": str(folder / "slurm-output"),
        "timeout_s": 3,
    }
    (folder / "policy.yaml").write_text(POLICY.format(site=SITE, adapter_config=json.dumps(adapter_config)))
    (folder / "tokens.yaml").write_text(
        "tokens:\n" + "".join(f"  - {{tenant: {t}, sha256: {hash_token(v)}}}\n" for t, v in TOKENS.items())
    )
    (folder / "broker.yaml").write_text(textwrap.dedent(f"""\
        data_dir: data
        policy: policy.yaml
        tokens_file: tokens.yaml
        dispatch: {{poll_interval_s: {poll_interval_s}, reconcile_interval_s: {reconcile_interval_s}}}
        sites:
          {SITE}: {{token: {json.dumps(cluster_env["SZB_SLURM_TOKEN"])}}}
        """))
    return folder / "broker.yaml"


def auth(tenant: str = "team-a") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[tenant]}"),)


TERMINAL = {job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED, job_pb2.JOB_STATE_CANCELLED}


def until_ended(stub: broker_service_pb2_grpc.BrokerServiceStub, job_id: str, deadline: float) -> job_pb2.Job:
    """The job once it ended (asked every 0.2 s); fails the test at `deadline` (time.monotonic())."""
    get = pb.GetJobRequest(id=job_id)
    while (job := stub.GetJob(get, metadata=auth()).job).state not in TERMINAL:
        assert time.monotonic() < deadline, job.message
        time.sleep(0.2)
    return job
