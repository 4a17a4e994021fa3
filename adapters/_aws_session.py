"""The EC2 clients of an AWS site: built when first needed, and built again after a failure.

README's Deployment touches docker/secrets/aws_config first and fills it later. A session built
once at start kept "profile not found" (or no keys) until a restart; one that is not kept when
its profile or credentials are missing, and dropped when the cloud refuses them, reads the
files again on the next call, so the site comes in once they are written.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from adapters._catalog import config_opt_str
from adapters.base import AuthError
from broker.model import SiteId

if TYPE_CHECKING:
    from mypy_boto3_ec2.client import EC2Client
else:
    EC2Client = Any

_TIMEOUTS: dict[str, Any] = {"connect_timeout": 5, "read_timeout": 30}
REFUSED_KEYS = frozenset({"AuthFailure", "ExpiredToken", "InvalidClientTokenId", "SignatureDoesNotMatch",
                          "MissingAuthenticationToken", "NoCredentials", "RequestExpired"})
"""EC2 codes (and ours) of credentials refused or missing, as opposed to a permission refused."""


class Ec2Clients:
    """A create client (one try: our classifier decides what to retry) and a read client (3 tries)."""

    def __init__(
        self,
        site: SiteId,
        region: str,
        endpoint: str | None,
        config: Mapping[str, Any],
        *,
        session: boto3.Session | None = None,
    ) -> None:
        self.site, self.region, self.endpoint = site, region, endpoint
        self.profile = config_opt_str(site, config, "profile")
        self._keys = {k: config_opt_str(site, config, k) for k in ("access_key_id", "secret_access_key",
                                                                   "session_token")}
        self._given = session  # a caller's session (tests) is used as it is, never rebuilt
        self._lock = threading.Lock()
        self._built: tuple[EC2Client, EC2Client] | None = None

    def get(self) -> tuple[EC2Client, EC2Client]:
        """(create, read); raises botocore's ProfileNotFound or AuthError, and keeps nothing then."""
        with self._lock:
            if self._built is None:
                self._built = self._build()
            return self._built

    def refused(self, code: str) -> None:
        """An AuthError `code` came back: keys the cloud refused are read again on the next call
        (a permission the role lacks is not the keys' fault: they are kept)."""
        if self._given is None and code in REFUSED_KEYS:
            with self._lock:
                self._built = None

    def _build(self) -> tuple[EC2Client, EC2Client]:
        session = self._given or boto3.Session(
            profile_name=self.profile,
            aws_access_key_id=self._keys["access_key_id"],
            aws_secret_access_key=self._keys["secret_access_key"],
            aws_session_token=self._keys["session_token"],
        )
        if self._given is None and session.get_credentials() is None:
            where = f"profile {self.profile}" if self.profile else "keys, environment or instance role"
            raise AuthError(self.site, "NoCredentials", f"no AWS credentials found ({where})")
        create, read = (
            session.client(
                "ec2",
                region_name=self.region,
                endpoint_url=self.endpoint,
                config=Config(retries={"total_max_attempts": tries, "mode": "standard"}, **_TIMEOUTS),
            )
            for tries in (1, 3)
        )
        return create, read
