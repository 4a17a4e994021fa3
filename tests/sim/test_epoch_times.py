"""A trace whose times are Unix epoch seconds reads as one whose times count from its start.

Review: `submit_time` values of ~1.7e9 were refused, "must be a finite duration of at most 10
years", though arrivals count from the trace's first one (the simulated clock starts the first
at its own epoch, midnight Beijing time; no scenario uses the time of day).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.cli import main
from broker.sim.traces import TraceError, read_trace

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "configs" / "policy-sim.yaml"
START = 1_700_000_000  # 2023-11-14 22:13:20 UTC
ROWS = [(0, "1h", "A10", 1), (600, "2h", "A10", 2), (601, "30m", "", 0), (5000, "6h", "A10", 4)]


def simulate(tmp_path: Path, start: float, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = tmp_path / f"trace-{start:g}.csv"
    rows = "".join(f"{start + t:g},{rt},{acc},{n}\n" for t, rt, acc, n in ROWS)
    path.write_text("submit_time,runtime,accelerator,count\n" + rows)
    argv = ["simulate", "--trace", str(path), "--policy", str(POLICY), "--no-lower-bound", "-o", "json"]
    code = main([*argv, "--baselines", "all", "--seed", "3"])
    out, err = capsys.readouterr()
    return code, out, err


def test_epoch_seconds_run_as_times_from_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = simulate(tmp_path, START, capsys)
    assert code == 0, err
    code, relative, err = simulate(tmp_path, 0, capsys)
    assert code == 0, err
    epoch, base = json.loads(out), json.loads(relative)
    assert epoch["strategies"]["policy"]["jobs"] == len(ROWS)
    for runs in (epoch, base):  # (all but the run's wall time, which varies)
        for strategy in runs["strategies"].values():
            strategy.pop("wall_s")
    assert epoch["strategies"] == base["strategies"]


def test_a_pod_list_in_epoch_seconds_keeps_its_run_times(tmp_path: Path) -> None:
    path = tmp_path / "pods.csv"
    path.write_text(
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,"
        f"scheduled_time\np1,8000,1024,1,1000,T4,LS,Running,{START},{START + 3700},{START + 100}\n"
    )
    jobs, _ = read_trace(path)
    assert [(j.submit_s, j.runtime_s) for j in jobs] == [(START, 3600)]


@pytest.mark.parametrize(
    ("times", "said"),
    [
        # Times from the start mixed with epoch seconds: not a 54-year trace, a broken one.
        ((0, START), ":3: submit_time: 1.7e+09 is 53.9 years after the first arrival (0, line 2)"),
        # Milliseconds, read as seconds, would stretch a day into 2.7 years.
        ((START * 1000, START * 1000 + 86_400_000), ":2: submit_time: 1.7e+12 is too large for seconds"),
    ],
)
def test_times_that_cannot_be_seconds_are_refused(tmp_path: Path, times: tuple[int, int], said: str) -> None:
    path = tmp_path / "trace.csv"
    path.write_text("submit_time,runtime\n" + "".join(f"{t},1h\n" for t in times))
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert str(err.value).startswith(f"{path}{said}"), str(err.value)
