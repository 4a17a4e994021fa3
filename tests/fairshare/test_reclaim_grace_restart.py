"""A broker crash does not cut short the grace a preempted local job was given.

`owner` is guaranteed one GPU of a 2-GPU partition; `borrower` fills it with two jobs whose
SIGTERM handler takes 12 s to save their state (within the 30 s `reclaim.grace`). The broker is
killed right after it preempted one and started again: its reconciler found the preempted
job's process still running, sent SIGTERM again and killed it `cancel_grace_s` (5 s) later, so
the state was never saved. The restarted broker now lets it finish within what is left of the
grace the preemption gave it, without a second SIGTERM.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

from tests.brokerproc import JOB_PYTHON, BrokerProcess, szb, write_broker_folder
from tests.fairshare.test_reclaim_bounded_e2e import POLICY as BOUNDED
from tests.fairshare.test_reclaim_bounded_e2e import TOKENS, show, submit, until

GRACE_S = 30
POLICY = BOUNDED.replace(
    "reclaim: {grace: 1s, max_capacity_share: 0.25, window: 20s}",
    f"reclaim: {{grace: {GRACE_S}s, max_capacity_share: 1.0, window: 10m}}",
)


def saver(broker: BrokerProcess, folder: Path, name: str, marks: Path) -> str:
    """A borrowed 1-GPU job that saves its state for 12 s on SIGTERM (counting the SIGTERMs)."""
    code = textwrap.dedent(f"""\
        import signal, sys, time
        def save(*_):
            open("{marks}/{name}.term", "a").write("x")
            time.sleep(12)
            open("{marks}/{name}.saved", "w").write("ok")
            sys.exit(0)
        signal.signal(signal.SIGTERM, save)
        time.sleep(900)
        """)
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps({
        "name": name, "command": [JOB_PYTHON, "-c", code], "runtime_estimate": "20m", "max_wait": "2h",
        "resources": {"accelerators": {"count": 1, "any_of": ["A800"]}},
    }))
    out = szb(broker, TOKENS["borrower"], "submit", str(path), "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    return str((got[0] if isinstance(got, list) else got)["id"])


def test_a_crash_during_the_grace_lets_the_preempted_job_save_its_state(tmp_path: Path) -> None:
    assert POLICY != BOUNDED
    marks = Path(tempfile.mkdtemp(prefix="szb-marks-"))  # not under pytest's root-only folder:
    marks.chmod(0o777)  # the job may run under its own uid
    broker = BrokerProcess(write_broker_folder(tmp_path / "broker", POLICY, TOKENS))
    broker.start()
    borrowed = [saver(broker, tmp_path, f"b{i}", marks) for i in range(2)]
    mine: list[str] = []
    try:
        state = lambda j: show(broker, "borrower", j)["state"]  # noqa: E731
        until(lambda: all(state(j) == "RUNNING" for j in borrowed), lambda: "borrowed jobs run")
        mine.append(submit(broker, "owner", tmp_path, "mine"))
        until(lambda: any(state(j) != "RUNNING" for j in borrowed),
              lambda: f"nothing preempted: {show(broker, 'owner', mine[0]).get('pending_reason')}")
        victim = next(f"b{i}" for i, j in enumerate(borrowed) if state(j) != "RUNNING")
        broker.kill()  # within the first seconds of the victim's 12 s of saving
        broker.restart()
        owner_runs = lambda: show(broker, "owner", mine[0])["state"] == "RUNNING"  # noqa: E731
        until(lambda: (marks / f"{victim}.saved").exists() or owner_runs(), lambda: "nothing moved", 90)
        time.sleep(1)
        assert (marks / f"{victim}.saved").exists(), (
            f"the preempted job was killed before its grace was over (SIGTERMs: "
            f"{(marks / f'{victim}.term').read_text() if (marks / f'{victim}.term').exists() else 0})"
        )
        assert (marks / f"{victim}.term").read_text() == "x", "it was sent SIGTERM again"
        until(owner_runs, lambda: "the owner never ran", 60)
    finally:
        for j in borrowed:
            szb(broker, TOKENS["borrower"], "cancel", j)
        for j in mine:
            szb(broker, TOKENS["owner"], "cancel", j)
        broker.stop()
        shutil.rmtree(marks, ignore_errors=True)
