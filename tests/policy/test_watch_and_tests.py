"""Hot reload keeps the last good policy; `szb policy test` pass/fail; `szb explain` offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.policy import PolicyWatcher

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
Cli = Callable[[list[str]], int]


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    shutil.copytree(CONFIGS, tmp_path / "configs")
    return tmp_path / "configs" / "policy.yaml"


def test_reload_swaps_valid_and_keeps_last_good(shipped: Path) -> None:
    swapped: list[str] = []
    watcher = PolicyWatcher(shipped, on_swap=lambda p: swapped.append(p.hash))
    first = watcher.current
    assert watcher.poll() is None  # unchanged
    shipped.write_text(shipped.read_text().replace("wait_hour_cost: 40", "wait_hour_cost: 55"))
    os.utime(shipped, (1, 1))
    assert watcher.poll() == []
    assert watcher.current.hash != first.hash and watcher.current.objective.wait_hour_cost == 55
    assert swapped == [watcher.current.hash]
    good = watcher.current
    shipped.write_text(shipped.read_text().replace("residency: global", "residency: nowhere", 1))
    problems = watcher.reload()
    assert problems and "unknown residency zone 'nowhere'" in problems[0].message
    assert watcher.current is good and watcher.last_problems == problems


def test_policy_test_passes(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["policy", "test", str(CONFIGS / "policy.yaml"), str(CONFIGS / "policy-tests.yaml")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "PASS: 6/6" in out


def test_policy_test_fails(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text(
        "tests:\n"
        "  - name: wrong expectation\n"
        "    tenant: pku-nlp\n"
        "    job: {name: x, command: [run], runtime_estimate: 1h,\n"
        "          resources: {accelerators: {count: 8, any_of: [A800]}}}\n"
        "    expect: {site: aws-us-east-1}\n"
        "  - name: right expectation\n"
        "    tenant: pku-nlp\n"
        "    job: {name: x, command: [run], runtime_estimate: 1h}\n"
        "    expect: {residency: cn-mainland}\n"
    )
    assert cli(["policy", "test", str(CONFIGS / "policy.yaml"), str(tests), "--output", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] == 1 and data["failed"] == 1
    bad = data["results"][0]
    assert not bad["passed"] and "expected site aws-us-east-1, got shangzhuang-onprem/a800" in bad["detail"]


def test_policy_test_bad_job_field(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tests = tmp_path / "t.yaml"
    tests.write_text(
        "tests:\n  - name: x\n    tenant: pku-nlp\n    job: {name: x, command: [run], "
        "runtime_estimate: 1h, gpus: 8}\n    expect: {}\n"
    )
    assert cli(["policy", "test", str(CONFIGS / "policy.yaml"), str(tests)]) == 1
    assert f"{tests}:4:" in capsys.readouterr().err


def test_policy_test_cases_that_check_nothing_are_refused_or_fail(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Held-out review: `expect: {}` passed; `sites_in`, `not_site` and `residency` passed for a job
    placed nowhere; a test job's misspelt accelerator was accepted (a job file refuses it)."""
    tests = tmp_path / "t.yaml"
    job = ("{name: x, command: [run], runtime_estimate: 1h, "
           "resources: {accelerators: {count: 1, any_of: [%s]}}}")
    case = "tests:\n  - name: one\n    tenant: pku-nlp\n    job: %s\n    expect: %s\n"
    tests.write_text(case % (job % "A800", "{}"))
    assert cli(["policy", "test", str(CONFIGS / "policy.yaml"), str(tests)]) == 1
    assert f"{tests}:5:5: error: tests.0.expect: names nothing to check" in capsys.readouterr().err
    tests.write_text(case % (job % "A8OO", "{allowed: false}"))
    assert cli(["policy", "test", str(CONFIGS / "policy.yaml"), str(tests)]) == 1
    err = capsys.readouterr().err
    assert "tests.0.job.resources.accelerators.any_of.0: unknown accelerator 'A8OO' (did you mean" in err
    nowhere = "{name: x, command: [run], runtime_estimate: 1h, resources: {accelerators: {count: 512}}}"
    tests.write_text(
        "tests:\n"
        + "".join(
            f"  - name: {field}\n    tenant: pku-nlp\n    job: {nowhere}\n"
            f"    expect: {{{field}: {value}}}\n"
            for field, value in (("sites_in", "[shangzhuang-onprem]"), ("not_site", "aws-us-east-1"),
                                 ("residency", "cn-mainland"))
        )
    )  # fmt: skip
    assert cli(["policy", "test", str(CONFIGS / "policy.yaml"), str(tests), "--output", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] == 0 and data["failed"] == 3, data
    assert all("got nothing" in r["detail"] for r in data["results"]), data


def test_explain_json_offline(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: finetune\ncommand: [python, train.py]\nruntime_estimate: 6h\n"
        "data_residency: cn-mainland\nresources:\n  accelerators: {count: 8, any_of: [A800, H800]}\n"
    )
    code = cli(
        [
            "explain",
            str(job),
            "--policy",
            str(CONFIGS / "policy.yaml"),
            "--tenant",
            "pku-nlp",
            "--output",
            "json",
        ]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["chosen"]["site"] == "shangzhuang-onprem" and data["chosen"]["residency"] == "cn-mainland"
    assert data["policy_hash"] and data["chosen"]["price_read_at"]
    assert all(o["residency"] == "cn-mainland" for o in data["offers"] if o["allowed"])


def test_explain_table_and_bad_job(cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.yaml"
    job.write_text("name: finetune\ncommand: [python]\nruntime_estimate: 1h\n")
    assert cli(["explain", str(job), "--policy", str(CONFIGS / "policy.yaml"), "--tenant", "pku-nlp"]) == 0
    assert "shangzhuang-onprem" in capsys.readouterr().out
    job.write_text("name: finetune\ncommand: [python]\nruntime_estimate: 1h\ngpus: 2\n")
    assert cli(["explain", str(job), "--policy", str(CONFIGS / "policy.yaml")]) == 1
    assert f"{job}:4:1: error: gpus: unknown field" in capsys.readouterr().err


def test_explain_names_the_blocking_rule_first(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A D:5 tenant asking for H100: the export rule leads, hardware misfits come after."""
    job = tmp_path / "h100.yaml"
    job.write_text(
        "name: big\ncommand: [python]\nruntime_estimate: 6h\n"
        "resources:\n  accelerators: {count: 8, any_of: [H100]}\n"
    )
    args = ["explain", str(job), "--policy", str(CONFIGS / "policy.yaml"), "--tenant", "zhipu-sme"]
    assert cli([*args, "-o", "json"]) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["allowed_offers"] == 0
    first = body["rejections"][0]
    assert first["rule"] == "us-export-3a090" and first["offers"] > 0
    assert body["rejections"][-1]["rule"] == "hardware.fit"
    assert body["offers"][0]["reasons"][0]["rule"] == "us-export-3a090"
    assert body["decision"]["reasons"][0].startswith("us-export-3a090:")
    assert cli(args) == 1
    out = capsys.readouterr().out
    total = len(body["offers"])
    counts = ", ".join(f"{r['offers']} {r['rule']}" for r in body["rejections"])
    assert f"0 of {total} offers allowed: {counts}" in out
    assert out.index("us-export-3a090") < out.index("hardware.fit")
    assert "[us-export-3a090]" in out  # the rule id survives rich rendering
    assert "USD" in out and "CNY" in out


def test_explain_refuses_server_with_policy(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Obs. 7: with SZB_SERVER set, --policy was silently ignored; now a usage error. (--tenant
    with --server names whose live decision to explain: tests/e2e/test_explain_for_tenant.py.)"""
    job = tmp_path / "job.yaml"
    job.write_text("name: finetune\ncommand: [python]\nruntime_estimate: 1h\n")
    policy = str(CONFIGS / "policy.yaml")
    assert cli(["explain", str(job), "--server", "127.0.0.1:9", "--policy", policy]) == 2
    assert "usage error" in capsys.readouterr().err
    monkeypatch.setenv("SZB_SERVER", "127.0.0.1:9")
    assert cli(["explain", str(job), "--policy", policy, "--tenant", "pku-nlp"]) == 2
    err = capsys.readouterr().err
    assert "--server (or SZB_SERVER)" in err and "--policy is for an offline explain" in err


def test_reload_swaps_when_only_a_referenced_file_changed(shipped: Path) -> None:
    """A SIGHUP (`reload()`) after editing regimes.yaml alone puts the new thresholds in force;
    it used to compare the policy file's hash only and keep the old regime ("unchanged")."""
    watcher = PolicyWatcher(shipped)
    first = watcher.current
    assert first.hardware("H20").classification.cls == "none"
    regimes = shipped.parent / "regimes.yaml"
    regimes.write_text(regimes.read_text().replace("tpp: {min: 2400}", "tpp: {min: 2300}", 1))
    assert watcher.changed()  # watched like the policy file itself
    assert watcher.reload() == []
    assert watcher.current is not first
    # The hash decisions record names the regimes file too: these decide H20 otherwise.
    assert watcher.current.hash != first.hash and watcher.current.inputs_digest != first.inputs_digest
    assert watcher.current.hardware("H20").classification.cls == "3A090.b"


def test_a_change_checked_while_the_store_is_away_is_read_again_and_the_watch_goes_on(
    shipped: Path,
) -> None:
    """Review: a check against the live jobs that the store could not answer (PostgreSQL
    restarting) ended the watch task for good, and the file change it was reading was never
    read again: later edits went unseen, with nothing logged."""
    import asyncio

    from broker.store import StoreUnavailable

    watcher = PolicyWatcher(shipped)
    first = watcher.current
    away = [True]

    def vet(policy: object, text: str) -> list[object]:
        if away[0]:
            raise StoreUnavailable("the database cannot be reached")
        return []

    watcher.vet = vet  # type: ignore[assignment]
    shipped.write_text(shipped.read_text().replace("wait_hour_cost: 40", "wait_hour_cost: 55"))
    os.utime(shipped, (1, 1))

    async def watch_a_while() -> bool:
        task = asyncio.create_task(watcher.watch(interval_s=0.01))
        await asyncio.sleep(0.2)  # polls failing all along
        alive = not task.done()
        away[0] = False
        await asyncio.sleep(0.2)
        task.cancel()
        return alive

    assert asyncio.run(watch_a_while()), "the watch ended at the first failed check"
    assert watcher.current is not first and watcher.current.objective.wait_hour_cost == 55


def test_serve_warns_when_tenants_share_the_slurm_sites_user(
    shipped: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Held-out review: under the shipped policy every tenant's Slurm job runs as the site's user
    `broker` (no tenant sets batch.user), so one can read another's agent secret, and nothing said so."""
    with caplog.at_level("WARNING", logger="broker.policy.watcher"):
        PolicyWatcher(shipped)
    said = [r.getMessage() for r in caplog.records if "have no batch.user" in r.getMessage()]
    assert len(said) == 1, caplog.text
    tenants = "pku-nlp, zhipu-sme, sg-partner, casia"
    assert f"site shangzhuang-onprem: tenants {tenants} have no batch.user" in said[0]
    assert "all run as broker" in said[0]
    caplog.clear()
    text = shipped.read_text()
    for tenant in ("pku-nlp", "zhipu-sme", "sg-partner", "casia"):
        text = text.replace(f"  - id: {tenant}\n", f"  - id: {tenant}\n    batch: {{user: {tenant}-jobs}}\n")
    shipped.write_text(text)
    with caplog.at_level("WARNING", logger="broker.policy.watcher"):
        watcher = PolicyWatcher(shipped)
    assert all(t.batch.user for t in watcher.current.tenants)
    assert "batch.user" not in caplog.text


def test_a_reload_refused_for_a_referenced_file_not_utf8_is_recorded(shipped: Path) -> None:
    """Held-out review: a non-UTF-8 byte in the catalog made the watcher log 'not checked' and record no
    refusal, where any other broken input is a refused reload."""
    watcher = PolicyWatcher(shipped)
    loads: list[str] = []
    watcher.on_load = lambda load: loads.append(load.result)
    good = watcher.current
    csv = shipped.parent / "catalog" / "alibaba_gpu_ecs.csv"
    csv.write_bytes(csv.read_bytes().replace(b"cn-beijing-h,CNY", b"\xb1\xb1\xbe\xa9-h,CNY", 1))
    os.utime(csv, (1, 1))  # written long ago: read at once, not after the settle time
    problems = watcher.poll()
    assert problems and problems[0].file == str(csv) and "is not UTF-8" in problems[0].message
    assert loads == ["refused"] and watcher.current is good and watcher.last_refused is not None


def test_a_policy_file_written_in_parts_goes_into_force_whole(tmp_path: Path) -> None:
    """Held-out review: a policy file truncated and written in two parts (an editor saving in place)
    was read between them, and the part before `rules:` went into force without its deny rule."""
    import time

    shutil.copytree(CONFIGS, tmp_path / "configs")
    live = tmp_path / "configs" / "live.yaml"
    local = (CONFIGS / "policy-local.yaml").read_text()
    rule = "  rules:\n    - id: {0}\n      deny: 'job.name == \"{0}\"'\n      reason: no {0} jobs\n"
    live.write_text(local + rule.format("old"))
    swapped: list[str] = []
    watcher = PolicyWatcher(live, on_swap=lambda p: swapped.append(p.hash), settle_s=1.0)
    with live.open("w") as f:  # truncated, then the part before `rules:`
        f.write(local)
        f.flush()
        assert watcher.poll() is None
        time.sleep(0.4)
        assert watcher.poll() is None
        f.write(rule.format("forbidden"))
    assert watcher.poll() is None  # changed again: read once it has stayed so
    assert swapped == []
    time.sleep(1.1)
    assert watcher.poll() == []
    assert [r.id for r in watcher.current.compliance.rules] == ["forbidden"]
    assert swapped == [watcher.current.hash]
    new = live.with_name("live.yaml.new")  # replaced by rename, as the README says: read at once
    new.write_text(local + rule.format("renamed"))
    new.replace(live)
    assert watcher.poll() == []
    assert [r.id for r in watcher.current.compliance.rules] == ["renamed"]


def test_a_policy_file_over_a_mebibyte_is_refused_by_check_and_by_a_reload(shipped: Path) -> None:
    """Found by a held-out review: a 3 MB policy took 33 s and 330 MB to check, and a live reload of
    it stalled explain calls; a 50 MB file of comments 44 s."""
    watcher = PolicyWatcher(shipped)
    good = watcher.current
    text = shipped.read_text()
    shipped.write_text(text + "# padding\n" * (2**20 // 10 + 1))
    os.utime(shipped, (1, 1))  # written long ago: read at the next poll
    problems = watcher.poll()
    assert problems and "larger than 1 MiB: not a policy" in problems[0].message, problems
    assert watcher.current is good
    done = subprocess.run(
        [sys.executable, "-m", "broker.cli", "policy", "check", str(shipped)], capture_output=True, text=True
    )
    assert done.returncode == 1 and f"{shipped}:1:1: error: larger than 1 MiB: not a policy" in done.stderr


def test_a_test_job_asking_for_models_with_no_count_is_refused(
    cli: Cli, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review: `any_of: [A800]` with no count is a CPU-only job, so a case meant for the A800 pool
    passed on the CPU partition (`site: shangzhuang-onprem`). The broker refuses such a job; so does
    `szb policy test`, at its position."""
    tests = tmp_path / "t.yaml"
    tests.write_text(
        "tests:\n  - name: a800 pool\n    tenant: pku-nlp\n"
        "    job: {name: x, command: [run], runtime_estimate: 1h,\n"
        "      resources: {accelerators: {any_of: [A800]}}}\n"
        "    expect: {site: shangzhuang-onprem}\n"
    )
    assert cli(["policy", "test", str(CONFIGS / "policy.yaml"), str(tests)]) == 1
    err = capsys.readouterr().err
    assert f"{tests}:5:" in err, err
    assert "tests.0.job.resources.accelerators.count: must be >= 1 when any_of" in err
