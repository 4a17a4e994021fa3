"""Provider error codes and what dispatch does next, without importing any SDK.

`aws`, `alibaba` and `libcloud` (which meets the same codes through its EC2/ECS drivers) share
these tables. `classify` keeps the most specific match: exact code, then longest prefix.
"""

from __future__ import annotations

from adapters.base import (
    AdapterError,
    AuthError,
    CapacityError,
    ConfigError,
    NotFoundError,
    QuotaError,
    TransientError,
    UnsupportedError,
)

ErrorTable = dict[str, type[AdapterError]]
PrefixTable = tuple[tuple[str, type[AdapterError]], ...]

EC2_CODES: ErrorTable = {
    # capacity: block (site, zone, type) for a while, try the next offer
    "InsufficientInstanceCapacity": CapacityError,
    "InsufficientHostCapacity": CapacityError,
    "InsufficientReservedInstanceCapacity": CapacityError,
    "InsufficientCapacity": CapacityError,
    "UnfulfillableCapacity": CapacityError,
    "SpotMaxPriceTooLow": CapacityError,
    "InsufficientFreeAddressesInSubnet": CapacityError,
    # not offered here
    "Unsupported": UnsupportedError,
    "InvalidInstanceType.NotFound": UnsupportedError,
    # quota
    "MaxSpotInstanceCountExceeded": QuotaError,
    "VcpuLimitExceeded": QuotaError,
    "InstanceLimitExceeded": QuotaError,
    # transient
    "RequestLimitExceeded": TransientError,
    "Throttling": TransientError,
    "InternalError": TransientError,
    "ServerInternal": TransientError,
    "ServiceUnavailable": TransientError,
    "Unavailable": TransientError,
    # auth
    "UnauthorizedOperation": AuthError,
    "AuthFailure": AuthError,
    "OptInRequired": AuthError,
    "PendingVerification": AuthError,
    "ExpiredToken": AuthError,
    "RequestExpired": AuthError,
    "InvalidClientTokenId": AuthError,
    "SignatureDoesNotMatch": AuthError,
    # configuration
    "InvalidKeyPair.NotFound": ConfigError,
    "InvalidSubnetID.NotFound": ConfigError,
    "InvalidGroup.NotFound": ConfigError,
    "InvalidParameterValue": ConfigError,
    "InvalidParameterCombination": ConfigError,
    # gone
    "InvalidInstanceID.NotFound": NotFoundError,
    "InvalidInstanceID.Malformed": NotFoundError,
}
"""Exact EC2 error codes (export-controls-and-catalog.md §5.1) and what dispatch does next."""

EC2_PREFIXES: PrefixTable = (
    ("InvalidParameter", ConfigError),
    ("InvalidAMIID.", ConfigError),
)
"""Families of codes; the longest matching prefix wins after an exact match."""

ECS_CODES: ErrorTable = {
    # stock: block (site, type, zone) for a while
    "NoStock": CapacityError,
    "OperationDenied.NoStock": CapacityError,
    "Invalid.PrivatePoolOptions.NoStock": CapacityError,
    "LackResource": CapacityError,
    "InvalidDedicatedHost.NotEnoughResource": CapacityError,
    "ResourceNotAvailable": CapacityError,
    # never sold here: drop the offer
    "Zone.NotOnSale": UnsupportedError,
    "Zone.NotOpen": UnsupportedError,
    "InvalidInstanceType.ValueNotSupported": UnsupportedError,
    "InvalidInstanceType.ZoneNotSupported": UnsupportedError,
    "InvalidInstanceType.NotSupported": UnsupportedError,
    "InvalidVpcZone.NotSupported": UnsupportedError,
    "OperationDenied.ZoneNotAllowed": UnsupportedError,
    # quota
    "QuotaExceed.ElasticQuota": QuotaError,
    "QuotaExceed.DiskCapacity": QuotaError,
    # transient
    "Throttling": TransientError,
    "Throttling.User": TransientError,
    "Throttling.Api": TransientError,
    "ServiceUnavailable": TransientError,
    "InternalError": TransientError,
    "IncorrectInstanceStatus": TransientError,
    # auth / account
    "InvalidAccessKeyId.NotFound": AuthError,
    "InvalidAccessKeyId.Inactive": AuthError,
    "SignatureDoesNotMatch": AuthError,
    "Forbidden.RAM": AuthError,
    "InvalidCredentials": AuthError,
    "MissingAccessKeyId": AuthError,
    "InvalidAccountStatus.NotEnoughBalance": AuthError,
    # configuration
    "InvalidImageId.NotFound": ConfigError,
    "InvalidSecurityGroupId.NotFound": ConfigError,
    "InvalidVSwitchId.NotFound": ConfigError,
    "OperationDenied.ZoneSystemCategoryNotMatch": ConfigError,
    "OperationDenied.CloudSSDNotSupported": ConfigError,
    "InvalidAction.NotFound": ConfigError,
    # gone
    "InvalidInstanceId.NotFound": NotFoundError,
}
"""Exact ECS error codes (export-controls-and-catalog.md §5.2) and what dispatch does next."""

ECS_PREFIXES: PrefixTable = (
    ("QuotaExceed.", QuotaError),
    ("Throttling.", TransientError),
    ("Forbidden.", AuthError),
    ("InvalidAccessKeyId.", AuthError),
    ("InvalidImageId.", ConfigError),
    ("InvalidParameter", ConfigError),
    ("MissingParameter", ConfigError),
)
"""Families of codes; the longest matching prefix wins after an exact match."""


def classify(code: str, exact: ErrorTable, prefixes: PrefixTable) -> type[AdapterError]:
    """The most specific class for a provider code; plain AdapterError when unknown."""
    found = exact.get(code)
    if found is not None:
        return found
    matches = [(len(p), cls) for p, cls in prefixes if code.startswith(p)]
    return max(matches, key=lambda m: m[0])[1] if matches else AdapterError
