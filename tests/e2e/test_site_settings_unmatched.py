"""A broker.yaml `sites:` entry the policy does not name is warned of, with its line, at start and
after each policy swap. Found by a held-out review: `sites: {locl: {run_as: ...}}` (meant for
`local`) started without a word, so the local site ran without those settings. It is a warning,
not a refusal: a cloud site's settings may be written before a policy reload names the site."""

from __future__ import annotations

from pathlib import Path

from tests.brokerproc import BrokerProcess
from tests.e2e.conftest import POLICY, write_broker_config
from tests.e2e.test_tokens_undeclared_tenant import _warning

RENAMED = POLICY.replace("  - id: local\n", "  - id: host\n")


def test_a_misspelt_site_and_one_a_reload_drops_are_warned_of_with_their_line(tmp_path: Path) -> None:
    config = write_broker_config(tmp_path)
    config.write_text(config.read_text() + "  locl: {max_output_bytes: 12}\n")
    line_of = {"local": 6, "locl": 7}
    assert [n for n, text in enumerate(config.read_text().splitlines(), 1) if "  loc" in text] == [6, 7]
    broker = BrokerProcess(config)
    broker.start()
    try:
        line = _warning(broker, "sites.locl")
        assert f"{config}:{line_of['locl']}:3: sites.locl: not a site of the policy (did you mean 'local'?)" \
            in line, broker.output[-20:]
        assert not any("sites.local:" in out for out in broker.output), broker.output[-20:]
        # A reload whose policy drops a site broker.yaml configures: warned of, and the broker serves on.
        mark = len(broker.output)
        (tmp_path / "policy.yaml").write_text(RENAMED)
        line = _warning(broker, "sites.local:", after=mark)
        said = f"{config}:{line_of['local']}:3: sites.local: not a site of the policy"
        assert said in line, broker.output[mark:]
        assert broker.proc is not None and broker.proc.poll() is None
    finally:
        broker.stop()
