"""Bearer tokens → tenants. The tokens file stores only SHA-256 hashes of tokens."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from ruamel.yaml import YAML

from broker.model import TenantId

log = logging.getLogger(__name__)

DEV_TENANT = TenantId("dev")


class AuthError(Exception):
    """No token, or a token nobody issued."""


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """Hex SHA-256 of the token (`szb token hash TOKEN` prints it)."""


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[TokenEntry] = []


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuthority:
    """Resolves `authorization: Bearer T` metadata to a tenant.

    With no tokens file the broker runs with a single built-in dev tenant, and says so loudly.
    """

    def __init__(self, entries: Sequence[TokenEntry] | None) -> None:
        self.dev_mode = entries is None
        self._by_hash: dict[str, TenantId] = {e.sha256: TenantId(e.tenant) for e in entries or ()}
        if self.dev_mode:
            log.warning(
                "NO TOKENS FILE: every caller is the built-in dev tenant %r. "
                "Do not run this way with real users; set `tokens_file` in broker.yaml.",
                DEV_TENANT,
            )

    @classmethod
    def from_file(cls, path: Path | None) -> TokenAuthority:
        if path is None:
            return cls(None)
        data = YAML(typ="safe").load(path.read_text()) or {}
        return cls(TokensFile.model_validate(data).tokens)

    def tenant_for(self, metadata: Mapping[str, str]) -> TenantId:
        """The caller's tenant; AuthError when the token is missing or unknown."""
        if self.dev_mode:
            return DEV_TENANT
        header = metadata.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("missing bearer token in 'authorization' metadata")
        # Only hashes are kept, so a dict lookup on the hash leaks nothing about tokens.
        tenant = self._by_hash.get(hash_token(token.strip()))
        if tenant is None:
            raise AuthError("unknown token")
        return tenant
