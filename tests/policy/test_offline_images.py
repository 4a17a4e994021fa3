"""Offline tools refuse a job's image where the live broker would: `szb explain --policy`, `szb policy test`.

Found by a README review: with the embedded default policy (one local site) a job with an
`image` was "run ... local" offline and a `policy test` case expecting `site: local` passed,
while the live broker refused the same job (`site.images`: the local executor runs commands
directly, not images).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.brokerproc import ROOT

DEFAULT = ROOT / "broker" / "defaults" / "policy.yaml"
JOB = """\
name: img-job
command: ["python", "train.py"]
image: registry.example.cn/pku/finetune:1.2
runtime_estimate: 1h
"""


def _szb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "broker.cli", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True)


def test_an_image_job_is_refused_on_the_local_site_offline_as_live(tmp_path: Path) -> None:
    (tmp_path / "img.yaml").write_text(JOB)
    out = _szb("explain", "img.yaml", "--policy", str(DEFAULT), "--tenant", "dev", "-o", "json", cwd=tmp_path)
    body = json.loads(out.stdout)
    assert body["decision"]["action"] == "reject", body["decision"]
    assert any(r["rule"] == "site.images" for r in body["rejections"]), body["rejections"]
    (tmp_path / "t.yaml").write_text(
        "tests:\n"
        "  - {name: image job runs locally, tenant: dev, expect: {site: local},\n"
        "     job: {name: img-job, command: [python], runtime_estimate: 1h,"
        " image: 'registry.example.cn/pku/finetune:1.2'}}\n"
        "  - {name: the same without an image, tenant: dev, expect: {site: local},\n"
        "     job: {name: plain, command: [python], runtime_estimate: 1h}}\n"
    )
    tested = _szb("policy", "test", str(DEFAULT), "t.yaml", cwd=tmp_path)
    assert tested.returncode == 1, tested.stdout + tested.stderr
    assert "FAIL" in tested.stdout and "image job runs locally" in tested.stdout, tested.stdout
    assert "PASS" in tested.stdout and "the same without an image" in tested.stdout, tested.stdout


def test_offline_explain_rejects_what_no_quota_ever_admits(tmp_path: Path) -> None:
    """Review: offline `szb explain` said "run" for a job submission refuses (its tenant may not
    borrow, and its quota is below what the job needs): it checked only the spot restart limit."""
    text = (ROOT / "configs" / "policy.yaml").read_text()
    text = text.replace("accelerators: accelerators.yaml\nregimes: regimes.yaml\n", "")
    narrowed = text.replace("quota: {shangzhuang-onprem/ascend: 128}",
                            "quota: {shangzhuang-onprem/ascend: 4}\n      may_borrow: false")
    assert narrowed != text
    (tmp_path / "policy.yaml").write_text(narrowed)
    shutil.copytree(ROOT / "configs" / "catalog", tmp_path / "catalog")
    (tmp_path / "big.yaml").write_text(
        "name: ascend-big\ncommand: [python, train.py]\nruntime_estimate: 2h\n"
        "resources: {accelerators: {count: 8, any_of: [Ascend910B]}}\n"
    )
    out = _szb("explain", "big.yaml", "--policy", "policy.yaml", "--tenant", "casia", "-o", "json",
               cwd=tmp_path)
    assert out.stdout, out.stderr
    decision = json.loads(out.stdout)["decision"]
    assert decision["action"] == "reject", decision
    assert any("quota" in r for r in decision["reasons"]), decision["reasons"]
