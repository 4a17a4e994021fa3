"""A second `szb serve` on a data dir a live broker serves refuses to start, naming the other.

Review (issue 11): the second printed "broker serving" and both dispatched from one store and one
set of local job folders; each start requeues what it finds half-placed, the other's work included.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import write_broker_config


def test_a_second_broker_on_the_same_data_dir_refuses_and_a_killed_ones_lock_is_gone(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    first = BrokerProcess(config)
    first.start()
    try:
        assert first.proc is not None
        second = BrokerProcess(config)
        with pytest.raises(RuntimeError, match=rf"is served by another broker \(pid {first.proc.pid}\)"):
            second.start()
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        again = BrokerProcess(config)
        again.start()
        again.stop()
    finally:
        first.stop()


def test_a_stopped_broker_gives_its_data_dir_up_within_its_own_process(tmp_path: Path) -> None:
    """A flock belongs to its open file: one a stopped broker kept would refuse the next broker
    of the same process (an embedding, a test) as if another served the data dir."""
    from broker.datadir_lock import DataDirInUse, hold_data_dir, release_data_dir

    held = hold_data_dir(tmp_path)
    with pytest.raises(DataDirInUse, match=r"is served by another broker"):
        hold_data_dir(tmp_path)
    release_data_dir(held)
    release_data_dir(hold_data_dir(tmp_path))
