"""`szb policy replay` on a store written by a real `szb serve` run (issue 15: replay of history).

The broker runs in a fresh folder on its embedded default (the local executor), jobs are
submitted over its gRPC port and run, the broker is stopped, and the README's replay line runs
as written against the `.szb` it left behind, with candidate policies that move a job to a
cheaper site, refuse another, or change nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.brokerproc import ROOT
from tests.e2e.test_readme_quick_tour import Server, base_env, fresh_clone, run

README_LINE = "szb policy replay --policy candidate.yaml --since 7d --data-dir .szb --report replay/"

SPARE_SITE = """  - id: spare
    adapter: local
    adapter_config: {workdir: /tmp/szb-spare}
    country: CN
    residency: cn-mainland
    partitions:
      - name: cpu
        price_hour: 0.2
        cpus_per_node: 16
        memory_gb_per_node: 64
tenants:"""

A800 = """      - name: a800
        accelerator: A800
        count_per_node: 8
        price_hour: 14.0           # shadow price per card-hour
        cpus_per_node: 64
        memory_gb_per_node: 512
"""


def default_policy() -> str:
    """The embedded default policy (it names no catalog files: the bundled ones serve it)."""
    return (ROOT / "broker" / "defaults" / "policy.yaml").read_text()


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = fresh_clone(tmp_path_factory.mktemp("replay"))
    env = base_env(folder)
    server = Server("szb serve", folder, {**env, "SZB_LISTEN": "127.0.0.1:0"})
    try:
        env["SZB_SERVER"] = f"127.0.0.1:{server.port}"
        for job in ("configs/examples/hello.yaml", "configs/examples/finetune-a800.yaml"):
            out = run(f"szb submit {job} --wait", folder, env)
            assert "SUCCEEDED" in out.stdout, out.stdout
        # The README's way to the policy in force: its hash from the history, its text from show.
        listed = run("szb policy history", folder, env).stdout
        (hash_in_force,) = re.findall(r"\b([0-9a-f]{12})\b.*\(in force\)", listed)
        run(f"szb policy show {hash_in_force} > in-force.yaml", folder, env)
    finally:
        server.stop()
    assert (folder / ".szb" / "broker.db").exists()
    return folder


def replay(folder: Path, args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"szb policy replay {args}"],
        cwd=folder,
        env=base_env(folder),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_readme_line_shows_a_moved_and_a_refused_job(history: Path) -> None:
    folder = history
    # Cheaper CPU capacity elsewhere, and no A800 partition any more.
    candidate = default_policy().replace(A800, "").replace("tenants:", SPARE_SITE, 1)
    assert candidate.count("a800") == 0 and "spare" in candidate
    (folder / "candidate.yaml").write_text(candidate)
    out = run(README_LINE, folder, base_env(folder))
    assert "Replay of 2 recorded jobs" in out.stdout
    assert "Placement changed (1)" in out.stdout and "Refused under the candidate (1)" in out.stdout
    # Its cost is lower partly because a job is refused: said under the table, not left to read as saving.
    assert "cost counts only the jobs a policy runs: the candidate refuses 1 more" in out.stdout
    for png in ("totals.png", "changes.png"):
        assert (folder / "replay" / png).stat().st_size > 1000
    body = json.loads((folder / "replay" / "summary.json").read_text())
    (moved,) = body["placement_changed"]
    assert (moved["name"], moved["site_before"], moved["site_after"]) == ("hello", "local", "spare")
    assert moved["recorded_site"] == "local"  # where the broker actually ran it
    (refused,) = body["refusals_new"]
    assert refused["name"] == "finetune-glm-6b" and refused["site_before"] == "local"
    assert body["current"]["rejected"] == 0 and body["candidate"]["rejected"] == 1
    assert body["candidate"]["cost"] < body["current"]["cost"]
    assert "defaults/policy.yaml (sha256 " in body["current_policy"]  # the version the broker loaded
    assert body["current_policy"].endswith(" Beijing time)")  # as the title's `since` (it said UTC)
    assert body["actual_runtimes"] == 2  # both ran: their recorded runtimes, not the estimates
    # Only local (on-prem) offers were launched: no recorded price applies, not even to the A800
    # offer key the candidate no longer has.
    assert body["recorded_prices"] == {}


def test_the_same_policy_changes_nothing(history: Path) -> None:
    folder = history
    (folder / "same.yaml").write_text(default_policy())
    out = replay(folder, "--policy same.yaml --output json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["jobs"] == 2
    assert body["placement_changed"] == body["refusals_new"] == body["refusals_gone"] == []
    assert body["delta"]["cost"] == 0 and body["current"]["rejected"] == 0


def test_the_policy_in_force_as_show_prints_it_replays_as_a_candidate(history: Path) -> None:
    """The text `szb policy show` prints, saved as the candidate an operator edits, loads on its
    own: the embedded default named accelerators.yaml and regimes.yaml, which are not beside it."""
    shown = (history / "in-force.yaml").read_text()
    assert not shown.startswith("# policy ") and "adapter: local" in shown  # the file as stored, only
    out = replay(history, "--policy in-force.yaml --since 7d --data-dir .szb -o json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["jobs"] == 2 and body["delta"]["cost"] == 0
    assert body["placement_changed"] == body["refusals_new"] == body["refusals_gone"] == []


def test_a_copy_of_the_installed_default_stands_alone(history: Path, tmp_path: Path) -> None:
    shutil.copy(ROOT / "broker" / "defaults" / "policy.yaml", tmp_path / "candidate.yaml")
    out = replay(history, f"--policy {tmp_path / 'candidate.yaml'} -o json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["placement_changed"] == []


def test_refusals_vanish_against_a_baseline_that_refused(history: Path) -> None:
    folder = history
    (folder / "narrow.yaml").write_text(default_policy().replace(A800, ""))
    (folder / "same.yaml").write_text(default_policy())
    out = replay(folder, "--policy same.yaml --baseline narrow.yaml -o json")
    assert out.returncode == 0, out.stderr
    (back,) = json.loads(out.stdout)["refusals_gone"]
    assert back["name"] == "finetune-glm-6b" and back["site_after"] == "local"


def test_clear_errors(history: Path) -> None:
    folder = history
    (folder / "same.yaml").write_text(default_policy())
    missing = replay(folder, "--policy same.yaml --data-dir nowhere")
    assert missing.returncode == 1 and "no broker store at nowhere/broker.db" in missing.stderr
    assert not (folder / "nowhere").exists()  # nothing created where the user expected a store
    empty = replay(folder, "--policy same.yaml --since 2099-01-01")
    assert empty.returncode == 1 and "no recorded jobs since" in empty.stderr
    for bad in ('""', "7x", "1y"):  # (an empty value used to mean the whole history)
        since = replay(folder, f"--policy same.yaml --since {bad}")
        assert since.returncode == 1 and "--since: " in since.stderr and "neither a time" in since.stderr
    (folder / "broken.yaml").write_text(default_policy().replace("price_hour: 1.0", "price_hour: cheap"))
    broken = replay(folder, "--policy broken.yaml")
    line = next(i for i, t in enumerate(default_policy().splitlines(), 1) if "price_hour: 1.0" in t)
    assert broken.returncode == 1 and f"broken.yaml:{line}:" in broken.stderr, broken.stderr


def copy_of(history: Path, tmp_path: Path) -> Path:
    """The history's data dir copied (the module's own stays as the broker left it)."""
    target = tmp_path / "copy"
    shutil.copytree(history / ".szb", target)
    return target


def test_a_candidate_on_prem_price_changes_the_cost(history: Path) -> None:
    """#15 review: an on-prem partition's price is the policy's own (a shadow price), so the
    recorded launch price must not hide a candidate that changes it."""
    folder = history
    (folder / "same.yaml").write_text(default_policy())
    halved = (
        default_policy()
        .replace("price_hour: 14.0", "price_hour: 7.0")
        .replace("price_hour: 1.0 ", "price_hour: 0.5 ")
    )
    (folder / "halved.yaml").write_text(halved)
    out = replay(folder, "--policy halved.yaml --baseline same.yaml -o json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["placement_changed"] == [] and body["candidate"]["rejected"] == 0
    assert body["candidate"]["cost"] == pytest.approx(body["current"]["cost"] / 2, rel=0.05), body
    assert body["recorded_prices"] == {}  # only cloud launches are replayed at their recorded price
    # Held-out review: a job run in the same place at another cost was in no list, so the total's
    # change went unexplained job by job.
    changed = body["cost_changed"]
    assert changed and all(r["cost_after"] == pytest.approx(r["cost_before"] / 2, abs=1e-3) for r in changed)
    assert sum(r["cost_before"] - r["cost_after"] for r in changed) == pytest.approx(
        body["current"]["cost"] - body["candidate"]["cost"], abs=0.05)


def test_a_refusal_names_the_rule_that_refuses(history: Path) -> None:
    folder = history
    (folder / "abroad.yaml").write_text(
        default_policy().replace("residency: cn-mainland\n", "residency: global\n", 1)
    )
    out = replay(folder, "--policy abroad.yaml")
    assert out.returncode == 0, out.stderr
    assert "Refused under the candidate (1)" in out.stdout and "residency:" in out.stdout, out.stdout
    body = json.loads(replay(folder, "--policy abroad.yaml -o json").stdout)
    (refused,) = body["refusals_new"]
    assert refused["name"] == "finetune-glm-6b"
    assert refused["reason"].startswith("residency: ") and "cn-mainland" in refused["reason"]
    back = json.loads(replay(folder, "--policy same.yaml --baseline abroad.yaml -o json").stdout)
    (admitted,) = back["refusals_gone"]
    assert admitted["reason_before"] == refused["reason"]


def test_replay_never_writes_an_older_store(history: Path, tmp_path: Path) -> None:
    """A store from before the epoch columns and the leadership table: replay reads it as it is
    (opening it as a store would bring its schema up to date) and leaves no files beside it."""
    data = copy_of(history, tmp_path)
    with sqlite3.connect(data / "broker.db") as db:
        for table, column in (("attempts", "epoch"), ("events", "epoch"), ("attempts", "secret_hash")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("DROP TABLE leadership")
    before = hashlib.sha256((data / "broker.db").read_bytes()).hexdigest()
    files = sorted(p.name for p in data.iterdir())
    (history / "same.yaml").write_text(default_policy())
    out = replay(history, f"--policy same.yaml --data-dir {data} -o json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["jobs"] == 2
    assert hashlib.sha256((data / "broker.db").read_bytes()).hexdigest() == before
    assert sorted(p.name for p in data.iterdir()) == files


def test_an_active_policy_that_no_longer_loads_says_so(history: Path, tmp_path: Path) -> None:
    data = copy_of(history, tmp_path)
    # The file it was loaded from has moved away, and it names an accelerator file beside itself.
    plain = re.sub(r"(?m)^(accelerators|regimes): .*\n", "", default_policy())
    own_files = re.sub(
        r"(?m)^(objective: .*\n)", r"\1accelerators: accelerators.yaml\nregimes: regimes.yaml\n", plain
    )
    with sqlite3.connect(data / "broker.db") as db:
        db.execute("UPDATE policy_versions SET source = '/srv/moved/policy.yaml', content = ?", (own_files,))
    (history / "same.yaml").write_text(default_policy())
    # The version keeps the files it referred to, by their names beside it: it loads from those.
    kept = replay(history, f"--policy same.yaml --data-dir {data} -o json")
    assert kept.returncode == 0 and json.loads(kept.stdout)["current_files_from"] == "store", kept.stderr
    with sqlite3.connect(data / "broker.db") as db:  # a version stored before its files were
        db.execute("UPDATE policy_versions SET files = ''")
    out = replay(history, f"--policy same.yaml --data-dir {data}")
    assert out.returncode == 1
    assert "the active policy the store records, /srv/moved/policy.yaml (sha256 " in out.stderr, out.stderr
    assert "/srv/moved/policy.yaml:5:" in out.stderr and "--baseline FILE" in out.stderr
    ok = replay(history, f"--policy same.yaml --baseline same.yaml --data-dir {data}")
    assert ok.returncode == 0, ok.stderr


def test_costs_in_another_currency_are_not_compared(history: Path) -> None:
    folder = history
    (folder / "same.yaml").write_text(default_policy())
    (folder / "usd.yaml").write_text(
        default_policy().replace("currency: CNY", "currency: USD\nfx: {CNY: 0.14}")
    )
    out = replay(folder, "--policy usd.yaml --baseline same.yaml")
    assert out.returncode == 1
    assert "the candidate prices in USD, same.yaml in CNY: costs would not compare" in out.stderr, out.stderr
    ok = replay(folder, "--policy same.yaml --baseline same.yaml")
    assert "total cost (CNY)" in ok.stdout


def test_a_piped_table_keeps_each_refusal_on_one_line(history: Path) -> None:
    """Without COLUMNS (a pipe, a CI log) the table was cut to 80 columns, wrapping every reason."""
    folder = history
    (folder / "abroad.yaml").write_text(
        default_policy().replace("residency: cn-mainland\n", "residency: global\n", 1)
    )
    env = {k: v for k, v in base_env(folder).items() if k != "COLUMNS"}
    out = subprocess.run(
        ["bash", "-c", "szb policy replay --policy abroad.yaml | cat"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    reason = json.loads(replay(folder, "--policy abroad.yaml -o json").stdout)["refusals_new"][0]["reason"]
    assert any(reason in line for line in out.stdout.splitlines()), out.stdout


def serve_and_submit_wide(
    tmp_path: Path, submit: str
) -> tuple[Path, dict[str, str], Server, subprocess.CompletedProcess[str]]:
    """A fresh clone's `szb serve` on the embedded default (stopped by the caller), and `submit`
    typed there beside `wide.yaml`, a 16-A800 job no 8-card node can take."""
    folder = fresh_clone(tmp_path)
    env = base_env(folder)
    (folder / "wide.yaml").write_text(
        "name: wide\ncommand: [python3, -c, 'print(1)']\nruntime_estimate: 1h\n"
        "resources: {accelerators: {count: 16, any_of: [A800]}}\n"
    )
    server = Server("szb serve", folder, {**env, "SZB_LISTEN": "127.0.0.1:0"})
    env["SZB_SERVER"] = f"127.0.0.1:{server.port}"
    try:
        done = subprocess.run(
            ["bash", "-c", submit], cwd=folder, env=env, capture_output=True, text=True, timeout=60
        )
    except BaseException:
        server.stop()
        raise
    return folder, env, server, done


def test_a_submission_refused_at_the_door_is_admitted_by_a_candidate(tmp_path: Path) -> None:
    """A job refused at submit has no job row, only the audit trail's record of its spec: the
    replay left it out, so a candidate that would admit it could not say so."""
    folder, env, server, refused = serve_and_submit_wide(tmp_path, "szb submit wide.yaml")
    try:
        # (the nearest miss first: the 8-card slice, not the 1-card one)
        told = "FAILED_PRECONDITION: no allowed offer: hardware.fit: a800 has 8 x A800; the job needs 16"
        assert refused.returncode == 1 and told in refused.stderr, refused.stderr
        run("szb submit configs/examples/hello.yaml --wait", folder, env)
    finally:
        server.stop()
    wider = default_policy().replace("count_per_node: 8", "count_per_node: 16")
    (folder / "big-nodes.yaml").write_text(wider)
    out = replay(folder, "--policy big-nodes.yaml")
    assert out.returncode == 0, out.stderr
    assert "Replay of 2 recorded jobs, 1 of them refused at submit" in out.stdout
    assert "No longer refused (1)" in out.stdout
    body = json.loads(replay(folder, "--policy big-nodes.yaml -o json").stdout)
    (back,) = body["refusals_gone"]
    assert back["name"] == "wide" and back["site_after"] == "local" and back["job"].startswith("refused-")
    assert back["reason_before"] == "hardware.fit: a800 has 8 x A800; the job needs 16"
    assert "refused" in back["refused_at_submit"]
    assert body["current"]["rejected"] == 1 and body["candidate"]["rejected"] == 0


def test_the_jobs_of_a_refused_call_are_recorded_and_replayed_as_one_call(tmp_path: Path) -> None:
    """A held-out review: `szb submit hello.yaml wide.yaml` is one call, refused whole, but only the
    refused spec was kept, so `hello` was lost from the history and a candidate admitting `wide`
    replayed one job where the call would have run two."""
    folder, env, server, refused = serve_and_submit_wide(
        tmp_path, "szb submit configs/examples/hello.yaml wide.yaml"
    )
    try:
        assert refused.returncode == 1 and "FAILED_PRECONDITION" in refused.stderr, refused.stderr
        audit = run("szb audit -o json", folder, env).stdout
    finally:
        server.stop()
    said = [e["message"] for e in json.loads(audit)["events"] if e["kind"] == "refused"]
    assert "job 'hello' refused with its call: requests[1] ('wide') has no allowed offer" in said, said
    assert any(m.startswith("job 'wide' refused: no allowed offer: hardware.fit") for m in said), said
    wider = default_policy().replace("count_per_node: 8", "count_per_node: 16")
    (folder / "big-nodes.yaml").write_text(wider)
    body = json.loads(replay(folder, "--policy big-nodes.yaml -o json").stdout)
    assert body["jobs"] == 2 and body["refused_at_submit"] == 2
    # Under the policy that refused `wide`, `hello` is refused with it; the candidate takes both.
    assert body["current"]["rejected"] == 2 and body["candidate"]["rejected"] == 0
    gone = {r["name"]: r for r in body["refusals_gone"]}
    assert set(gone) == {"hello", "wide"}
    assert gone["hello"]["reason_before"] == (
        "refused with its call: job 'wide': hardware.fit: a800 has 8 x A800; the job needs 16"
    )
