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

from broker.peer_uid import UNKNOWN_UID, local_peer_uid
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


@pytest.mark.skipif(os.geteuid() != 0, reason="another local user (a job's private uid) needs root")
def test_a_unix_socket_caller_is_not_the_dev_operator(tmp_path: Path) -> None:
    """`--listen` took `unix-abstract:NAME:0` (HOST:PORT in form), and a unix socket's peer was not
    judged: any local user, a job under its private uid too, called the dev broker as its operator.
    An abstract socket has no file mode to stop them: such a caller is refused like an unlisted one."""
    folder = fresh_clone(tmp_path)
    env = base_env(folder)
    address = f"unix-abstract:szb-test-{os.getpid()}-{tmp_path.name}:0"
    server = Server("szb serve", folder, {**env, "SZB_LISTEN": address})
    try:
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        as_nobody = subprocess.run(
            [*nobody, sys.executable, "-c", CALL, address],
            cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        said = as_nobody.stdout + as_nobody.stderr
        assert said.startswith("UNAUTHENTICATED"), said  # was: answered
        assert "only the broker's own user may call it" in said, said
    finally:
        server.stop()


def test_the_socket_table_names_a_loopback_callers_uid(tmp_path: Path) -> None:
    table = tmp_path / "tcp"
    table.write_text(
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:D431 0100007F:C383 01 00000000:00000000 00:00000000 00000000  1234        0 1 1\n"
        "   1: 0A000002:D432 0A000001:C383 01 00000000:00000000 00:00000000 00000000  4321        0 2 1\n"
    )
    assert local_peer_uid("ipv4:127.0.0.1:54321", (table,)) == 1234
    assert local_peer_uid("ipv4:10.0.0.2:54322", (table,)) is None  # another host's caller: not judged
    assert local_peer_uid("ipv4:127.0.0.1:1", (table,)) == UNKNOWN_UID  # loopback, not listed: refused
    assert local_peer_uid("ipv4:127.0.0.1:1", (tmp_path / "no-such-table",)) is None  # cannot tell


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
    assert local_peer_uid("ipv4:127.0.0.2:8080", (table,)) == 2000000006
    six = tmp_path / "tcp6"
    six.write_text(
        "  sl  local_address                         remote_address                        st tx_queue "
        "rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0000000000000000FFFF00000200007F:1F90 0000000000000000FFFF00000100007F:C383 01 "
        "00000000:00000000 00:00000000 00000000  2000000007 0 4 1\n"
    )
    assert local_peer_uid("ipv6:%5B::ffff:127.0.0.2%5D:8080", (six,)) == 2000000007
    assert local_peer_uid("ipv6:[::ffff:127.0.0.2]:8080", (table,)) == 2000000006  # listed as IPv4
    assert local_peer_uid("unix:/tmp/socket", (table,)) == UNKNOWN_UID  # (not judged was: any user)


@pytest.mark.skipif(os.geteuid() != 0, reason="another local user (a job's private uid) needs root")
def test_the_kernel_lookup_names_the_same_owner_as_the_socket_table() -> None:
    """Reading /proc/net/tcp walks the kernel's whole table (4 ms of CPU per dev-mode RPC on a
    busy host, a held-out review): once a caller taught the server's end, later callers are one
    `sock_diag` lookup, which must name the owner the table names, another user's too."""
    import ipaddress
    import socket

    from broker.peer_uid import TABLES
    from broker.sock_diag import established_uid

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        hold = "import socket, sys, time\nc = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
        hold += "print(c.getsockname()[1], flush=True)\ntime.sleep(30)\n"
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        other = subprocess.Popen(
            [*as_nobody, sys.executable, "-c", hold, str(port)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert other.stdout is not None
            their_port = int(other.stdout.readline())
            peer = f"ipv4:127.0.0.1:{their_port}"
            loopback = ipaddress.ip_address("127.0.0.1")
            assert local_peer_uid(peer, (*TABLES,)) == 65534  # (a copy: the table alone)
            assert established_uid(loopback, their_port, loopback, port) == 65534
            assert established_uid(loopback, their_port, loopback, port + 1) is None  # another far end
            assert local_peer_uid(peer) == 65534  # the table once, learning the far end
            assert local_peer_uid(peer) == 65534  # then the kernel
            with socket.create_connection(("127.0.0.1", port)) as mine:
                assert local_peer_uid(f"ipv4:127.0.0.1:{mine.getsockname()[1]}") == os.getuid()
        finally:
            other.kill()
            other.wait()


def _own_non_loopback_address() -> str | None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # (no packet is sent: this only picks the route's source)
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


@pytest.mark.skipif(os.geteuid() != 0, reason="another local user (a job's private uid) needs root")
def test_a_caller_of_another_uid_on_the_hosts_own_address_is_not_the_dev_operator(tmp_path: Path) -> None:
    """Held-out review: a broker without a tokens file listening beyond loopback judged only
    loopback callers, so a local job that called the host's own address listed and cancelled
    every job as the dev operator."""
    address = _own_non_loopback_address()
    if address is None:
        pytest.skip("this host has no address but loopback to call itself on")
    folder = fresh_clone(tmp_path)
    env = base_env(folder)
    server = Server("szb serve", folder, {**env, "SZB_LISTEN": "0.0.0.0:0"})
    try:

        def call(*prefix: str) -> str:
            done = subprocess.run(
                [*prefix, sys.executable, "-c", CALL, f"{address}:{server.port}"],
                cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            return done.stdout + done.stderr

        assert call().strip() == "answered"  # the broker's own user, on the host's address
        as_nobody = call("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
        assert as_nobody.startswith("UNAUTHENTICATED"), as_nobody
        assert "this caller runs as uid 65534" in as_nobody
    finally:
        server.stop()


def _link_local() -> str | None:
    """This host's IPv6 link-local address with its zone (`fe80::1%eth0`), if it has one."""
    try:
        lines = Path("/proc/net/if_inet6").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hexaddr, _index, _plen, scope, _flags, name = line.split()
        if scope == "20":  # link scope
            return f"{ipaddress_of(hexaddr)}%{name}"
    return None


def ipaddress_of(hexaddr: str) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(bytes.fromhex(hexaddr)))


ECHO_AS_NOBODY = (
    "import grpc, os, sys\n"
    "ch = grpc.insecure_channel(sys.argv[1])\n"
    "os.setgid(65534); os.setuid(65534)\n"
    "print(ch.unary_unary('/t.T/Echo')(b'x', timeout=10))\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="another local user (a job's private uid) needs root")
def test_a_caller_on_the_hosts_link_local_address_is_judged_by_its_uid() -> None:
    """A review of the own-address fix: grpc names such a caller `ipv6:[fe80::…%eth0]:PORT` and the
    zone made the peer unreadable, which counted as another host's caller: the dev operator."""
    import asyncio

    import grpc

    link_local = _link_local()
    if link_local is None:
        pytest.skip("this host has no IPv6 link-local address")
    seen: list[tuple[str, int | None]] = []

    def echo(_request: bytes, context: grpc.ServicerContext) -> bytes:
        seen.append((context.peer(), local_peer_uid(context.peer())))
        return b"ok"

    async def main() -> str:
        server = grpc.aio.server()
        handlers = {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.T", handlers),))
        port = server.add_insecure_port("[::]:0")
        await server.start()
        target = f"[{link_local.replace('%', '%25')}]:{port}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ECHO_AS_NOBODY, target, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
        await server.stop(None)
        return (out + err).decode()

    said = asyncio.run(main())
    assert seen, said
    peer, uid = seen[0]
    assert "fe80" in peer and uid == 65534, (peer, uid, said)
