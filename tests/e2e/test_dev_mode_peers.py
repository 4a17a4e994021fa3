"""Without a tokens file every caller is the `dev` operator, meant for one person on one machine:
but the local executor's jobs run on that machine too, and a job could call the broker on loopback,
read another job's spec and environment, and cancel it (held-out review). A root broker runs each
job under a private uid: in dev mode a loopback caller of another uid is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from broker.peer_uid import UNKNOWN_UID, loopback_peer_uid
from tests.brokerproc import ROOT
from tests.e2e.test_readme_quick_tour import Server, base_env, fresh_clone

CALL = (
    "import sys, grpc\n"
    "from broker.api import broker_service_pb2 as pb, broker_service_pb2_grpc as svc\n"
    "with grpc.insecure_channel(sys.argv[1]) as ch:\n"
    "    try:\n"
    "        svc.BrokerServiceStub(ch).ListJobs(pb.ListJobsRequest(), timeout=20)\n"
    "        print('answered')\n"
    "    except grpc.RpcError as e:\n"
    "        print(e.code().name, e.details())\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="another local user (a job's private uid) needs root")
def test_a_loopback_caller_of_another_uid_is_not_the_dev_operator(tmp_path: Path) -> None:
    folder = fresh_clone(tmp_path)
    env = base_env(folder)
    server = Server("szb serve", folder, {**env, "SZB_LISTEN": "127.0.0.1:0"})
    try:
        address = f"127.0.0.1:{server.port}"

        def call(*prefix: str) -> str:
            done = subprocess.run(
                [*prefix, sys.executable, "-c", CALL, address],
                cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            return done.stdout + done.stderr

        assert call().strip() == "answered"  # the broker's own user: the dev operator
        as_nobody = call("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        assert as_nobody.startswith("UNAUTHENTICATED"), as_nobody
        assert "only the broker's own user may call it; this caller runs as uid 65534" in as_nobody
    finally:
        server.stop()


def test_the_socket_table_names_a_loopback_callers_uid(tmp_path: Path) -> None:
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:D431 0100007F:C383 01 00000000:00000000 00:00000000 00000000  1234        0 1 1\n"
        "   1: 0A000002:D432 0A000001:C383 01 00000000:00000000 00:00000000 00000000  4321        0 2 1\n"
    )
    assert loopback_peer_uid("ipv4:127.0.0.1:54321", (table,)) == 1234
    assert loopback_peer_uid("ipv4:10.0.0.2:54322", (table,)) is None  # not loopback: not judged
    assert loopback_peer_uid("ipv4:127.0.0.1:1", (table,)) == UNKNOWN_UID  # loopback, not listed: refused
    assert loopback_peer_uid("ipv4:127.0.0.1:1", (tmp_path / "no-such-table",)) is None  # cannot tell


def test_a_caller_bound_beside_a_root_listener_is_not_read_as_root(tmp_path: Path) -> None:
    """Held-out review: a job bound its end to 127.0.0.2 on the port of the agent endpoint, which
    root listens on at 127.0.0.1; matching the port alone read the caller as root (the dev operator)."""
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n"
        "   1: 0200007F:1F90 0100007F:C383 01 00000000:00000000 00:00000000 00000000  2000000006 0 2 1\n"
        "   2: 0100007F:C383 0200007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 3 1\n"
    )
    assert loopback_peer_uid("ipv4:127.0.0.2:8080", (table,)) == 2000000006
    six = tmp_path / "tcp6"
    six.write_text(
        "  sl  local_address                         remote_address                        st tx_queue "
        "rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0000000000000000FFFF00000200007F:1F90 0000000000000000FFFF00000100007F:C383 01 "
        "00000000:00000000 00:00000000 00000000  2000000007 0 4 1\n"
    )
    assert loopback_peer_uid("ipv6:%5B::ffff:127.0.0.2%5D:8080", (six,)) == 2000000007
    assert loopback_peer_uid("ipv6:[::ffff:127.0.0.2]:8080", (table,)) == 2000000006  # listed as IPv4
    assert loopback_peer_uid("unix:/tmp/socket", (table,)) is None
