"""`szb policy replay` loads the recorded policy with the files it referred to as the store kept them
(issue 15): it loaded the stored policy text against accelerators.yaml as it is on disk now, so an
edit of the catalog since the jobs ran changed the "current" side, which was then not what was in
force. A version stored before its files were falls back to the disk, and says so."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from broker.policy import load_policy_text
from tests.brokerproc import ROOT
from tests.e2e.test_policy_replay import replay
from tests.e2e.test_readme_quick_tour import Server, base_env, fresh_clone, run

A800_MEMORY = (
    "  - name: A800\n    vendor: NVIDIA\n    family: A800\n    aliases: [A800-80GB, A800-SXM4-80GB]\n"
)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A broker run on a policy with its catalogs beside it, an A800 job run under it, and then
    the A800's memory edited on disk to 40 GB (the job asks for 64): from disk, it no longer fits."""
    folder = fresh_clone(tmp_path_factory.mktemp("replay-files"))
    (folder / "pol").mkdir()
    for name in ("policy.yaml", "accelerators.yaml", "regimes.yaml"):
        shutil.copy(ROOT / "broker" / "defaults" / name, folder / "pol" / name)
    env = base_env(folder)
    serve_env = {**env, "SZB_LISTEN": "127.0.0.1:0", "SZB_POLICY": "pol/policy.yaml"}
    server = Server("szb serve", folder, serve_env)
    try:
        env["SZB_SERVER"] = f"127.0.0.1:{server.port}"
        out = run("szb submit configs/examples/finetune-a800.yaml --wait", folder, env)
        assert "SUCCEEDED" in out.stdout, out.stdout
    finally:
        server.stop()
    catalog = folder / "pol" / "accelerators.yaml"
    text = catalog.read_text()
    at = text.index(A800_MEMORY) + len(A800_MEMORY)
    assert text[at:].startswith("    memory_gb: 80\n")
    catalog.write_text(text[:at] + text[at:].replace("memory_gb: 80", "memory_gb: 40", 1))
    return folder


def test_the_current_side_uses_the_files_stored_with_the_version(history: Path) -> None:
    out = replay(history, "--policy pol/policy.yaml --data-dir .szb -o json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    # The job ran on the A800 partition: under what was in force it still fits; the candidate,
    # the same policy file with the catalog as it is on disk now, refuses it.
    assert body["current"]["rejected"] == 0 and body["candidate"]["rejected"] == 1, body["current"]
    assert body["current_files_from"] == "store"
    (refused,) = body["refusals_new"]
    assert refused["name"] == "finetune-glm-6b" and refused["site_before"] == "local"


def test_a_version_stored_without_its_files_reads_the_disk_and_says_so(history: Path, tmp_path: Path) -> None:
    data = tmp_path / "copy"
    shutil.copytree(history / ".szb", data)
    with sqlite3.connect(data / "broker.db") as db:  # as a row written before files were kept
        assert db.execute("UPDATE policy_versions SET files = ''").rowcount > 0
    out = replay(history, f"--policy pol/policy.yaml --data-dir {data} -o json")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["current_files_from"] == "disk, none stored"
    assert body["current"]["rejected"] == body["candidate"]["rejected"] == 1  # both read today's catalog
    table = replay(history, f"--policy pol/policy.yaml --data-dir {data}")
    assert table.returncode == 0, table.stderr
    assert "kept no copy of the files it refers to" in table.stdout and "read from disk" in table.stdout


def test_a_version_loaded_from_its_stored_files_has_its_recorded_hash(history: Path) -> None:
    """What replay calls the policy in force is the version recorded: the same hash, though the
    catalog on disk has changed since."""
    with sqlite3.connect(history / ".szb" / "broker.db") as db:
        rows = db.execute(
            "SELECT hash, source, content, files FROM policy_versions WHERE result = 'loaded'"
        ).fetchall()
    assert rows
    for recorded, source, content, files in rows:
        stored = {str(n): str(t) for n, t in json.loads(files)}
        assert "accelerators.yaml" in stored
        assert load_policy_text(content, source, stored).hash == recorded
        assert load_policy_text(content, source).hash != recorded  # (from disk: the edited catalog)
