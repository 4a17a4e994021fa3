"""One local A800 partition and its tenants: the set-up the fair-share end-to-end tests share."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from google.protobuf import duration_pb2

from broker.api import job_pb2
from tests.brokerproc import JOB_PYTHON
from tests.local_policy import a800, local_policy

Metadata = tuple[tuple[str, str], ...]


def policy(tenants: str, *, per_node: int, rest: str = "") -> str:
    """A policy whose one site is `local` with one A800 partition of `per_node` GPUs."""
    return local_policy(f"{tenants.rstrip()}\n", a800(per_node), rest=f"{rest.rstrip()}\n")


def bearer(tokens: Mapping[str, str], tenant: str) -> Metadata:
    """The call metadata that authenticates as `tenant`."""
    return (("authorization", f"Bearer {tokens[tenant]}"),)


def a800_job(name: str, code: str, *, gpus: int = 1, estimate_s: int = 600) -> job_pb2.JobSpec:
    """A job running `code` in Python on `gpus` A800s."""
    msg = job_pb2.JobSpec(name=name, command=[JOB_PYTHON, "-c", code],
                          runtime_estimate=duration_pb2.Duration(seconds=estimate_s))
    msg.resources.accelerators.count = gpus
    msg.resources.accelerators.any_of.append("A800")
    return msg


def until(what: str, check: Callable[[], bool], timeout: float = 60) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)
