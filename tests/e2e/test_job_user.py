"""The local executor's job user: made on a fresh machine for the embedded default only."""

from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters._sandbox import Sandbox
from adapters.base import ConfigError
from broker.model import SiteId

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating a user needs root")


@pytest.fixture
def user_name() -> Iterator[str]:
    name = f"szbt{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["userdel", name], capture_output=True, check=False)


def test_a_missing_default_job_user_is_created(user_name: str, tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        pwd.getpwnam(user_name)
    sandbox = Sandbox.from_config(
        SiteId("local"), {"run_as": user_name, "create_user": True}, tmp_path / "data"
    )
    entry = pwd.getpwnam(user_name)
    assert sandbox.user is not None and sandbox.user.uid == entry.pw_uid != 0
    assert entry.pw_shell.endswith("nologin")


def test_a_named_missing_user_is_a_config_error_not_created(user_name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="run_as"):
        Sandbox.from_config(SiteId("local"), {"run_as": user_name}, tmp_path / "data")
    with pytest.raises(KeyError):
        pwd.getpwnam(user_name)
