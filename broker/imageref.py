"""Container image references: only the OCI grammar passes (they reach runtimes and scripts)."""

from __future__ import annotations

import re

# The OCI / Docker image reference grammar (distribution/reference's regexp.go): an optional
# registry host[:port], lower-case path components, an optional tag and an optional digest.
# Nothing else may pass: the image is handed to container runtimes and bootstrap scripts.
_OCI_ALNUM = r"[a-z0-9]+"
_OCI_PATH = rf"{_OCI_ALNUM}(?:(?:[._]|__|-+){_OCI_ALNUM})*"
_OCI_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_OCI_HOST = rf"(?:{_OCI_DOMAIN_PART}(?:\.{_OCI_DOMAIN_PART})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_OCI_NAME = rf"(?:{_OCI_HOST}/)?{_OCI_PATH}(?:/{_OCI_PATH})*"
_OCI_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_OCI_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_OCI_REFERENCE = re.compile(rf"({_OCI_NAME})(?::{_OCI_TAG})?(?:@{_OCI_DIGEST})?", re.ASCII)
_OCI_NAME_MAX = 255


def check_image(value: str) -> str:
    """Accept only an OCI image reference such as `registry:5000/org/app:1.2@sha256:…`."""
    m = _OCI_REFERENCE.fullmatch(value)
    if m is None:
        raise ValueError(
            "must be an OCI image reference such as docker.io/library/python:3.12 "
            "(lower-case path, optional registry, tag and digest; no spaces or options)"
        )
    if len(m.group(1)) > _OCI_NAME_MAX:
        raise ValueError(f"image name must be at most {_OCI_NAME_MAX} characters")
    return value
