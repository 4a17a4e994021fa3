"""Policy and tokens files mounted the Kubernetes way (`policy.yaml -> ..data/policy.yaml`,
`..data -> ..v1`): re-pointing `..data` at a new version is picked up like an edit.

The broker used to resolve both paths once at start and watch `..v1/...` forever: a new policy
never went into force, and a token removed from the Secret kept working.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc

from broker.api import broker_service_pb2 as pb
from broker.api import broker_service_pb2_grpc
from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, auth, write_broker_config

MOUNTED = ("policy.yaml", "accelerators.yaml", "regimes.yaml", "tokens.yaml")


def publish(folder: Path, version: str, files: dict[str, str]) -> None:
    """Write `..version` and swap `..data` to it atomically, then remove the old version, as the
    kubelet's atomic writer does."""
    target = folder / version
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    old = os.readlink(folder / "..data") if (folder / "..data").is_symlink() else None
    os.symlink(version, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")
    if old is not None:
        shutil.rmtree(folder / old)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)


def accepted(stub: broker_service_pb2_grpc.BrokerServiceStub, tenant: str) -> bool:
    try:
        stub.ListJobs(pb.ListJobsRequest(), metadata=auth(tenant))
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err
        return False
    return True


def priced(price: int) -> str:
    return POLICY.replace("price_hour: 14.0", f"price_hour: {price}.0")


def test_a_swapped_configmap_and_secret_go_into_force(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    files = {name: (tmp_path / name).read_text() for name in MOUNTED}
    for name in MOUNTED:
        (tmp_path / name).unlink()
        os.symlink(f"..data/{name}", tmp_path / name)
    publish(tmp_path, "..v1", files)
    b_line = next(line for line in files["tokens.yaml"].splitlines(True) if "tenant: team-b" in line)
    broker = BrokerProcess(config)
    broker.start()
    try:
        with grpc.insecure_channel(broker.address) as channel:
            stub = broker_service_pb2_grpc.BrokerServiceStub(channel)

            def policy_hash() -> str:
                return stub.GetStatus(pb.GetStatusRequest(), metadata=auth("team-a")).policy_hash

            first = policy_hash()
            assert accepted(stub, "team-b")
            revoked = files["tokens.yaml"].replace(b_line, "")
            publish(tmp_path, "..v2", {**files, "policy.yaml": priced(15), "tokens.yaml": revoked})
            wait_until(lambda: policy_hash() != first, "the swapped-in policy in force")
            wait_until(lambda: not accepted(stub, "team-b"), "team-b refused once the Secret dropped it")
            second = policy_hash()

            # A later swap works too: the broker follows `..data`, not the version it first saw.
            publish(tmp_path, "..v3", {**files, "policy.yaml": priced(16)})
            wait_until(lambda: policy_hash() not in (first, second), "the second swap in force")
            wait_until(lambda: accepted(stub, "team-b"), "team-b's token accepted again")
            assert accepted(stub, "team-a")
    finally:
        broker.stop()


def test_a_policy_symlinked_from_another_folder_finds_the_files_beside_its_target(tmp_path: Path) -> None:
    """Review of the swap fix: a `conf/policy.yaml -> ../real/policy.yaml` link, its accelerators
    and regimes files beside the target, stopped loading ("accelerators: file not found" in conf/)."""
    from broker.policy import load_policy

    real, conf = tmp_path / "real", tmp_path / "conf"
    real.mkdir()
    conf.mkdir()
    configs = Path(__file__).resolve().parents[2] / "configs"
    for name in ("policy.yaml", "accelerators.yaml", "regimes.yaml"):
        shutil.copy(configs / name, real / name)
    shutil.copytree(configs / "catalog", real / "catalog")
    (conf / "policy.yaml").symlink_to("../real/policy.yaml")
    assert load_policy(conf / "policy.yaml").sites
