"""The metadata service of an instance libcloud's EC2 driver launched: IMDSv2 only, as the aws
adapter's (`adapters.aws`). The driver's `create_node` has no MetadataOptions, so the instance is
asked for them right after its launch, seconds before its bootstrap starts the job."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from libcloud.compute.base import NodeDriver

from adapters._catalog import config_imds
from broker.model import SiteId

log = logging.getLogger(__name__)


def metadata_params(site: SiteId, config: Mapping[str, Any], instance_id: str) -> dict[str, str]:
    """EC2's ModifyInstanceMetadataOptions for the site's `imds_v1` / `imds_hop_limit`
    (ConfigError for a bad one, `config_imds`)."""
    v1, hops = config_imds(site, config)
    return {
        "Action": "ModifyInstanceMetadataOptions",
        "InstanceId": instance_id,
        "HttpTokens": "optional" if v1 else "required",
        "HttpPutResponseHopLimit": str(hops),
        "HttpEndpoint": "enabled",
    }


def harden_metadata(driver: NodeDriver, site: SiteId, config: Mapping[str, Any], instance_id: str) -> bool:
    """Ask EC2 for the instance's metadata options; False (and a warning) when it would not: the
    instance then keeps the provider's default, as before (the launch itself stands)."""
    connection: Any = driver.connection
    try:
        connection.request(getattr(driver, "path", "/"), params=metadata_params(site, config, instance_id))
    except Exception as exc:  # (any driver or endpoint error: the instance is up and its job on the way)
        log.warning("%s: could not set IMDSv2 only on %s (%s); its metadata service keeps the "
                    "provider's default", site, instance_id, exc,
                    extra={"event": "imds_not_hardened", "site": site, "instance": instance_id})
        return False
    return True
