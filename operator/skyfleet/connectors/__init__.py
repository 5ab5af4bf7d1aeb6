"""Cloud connectors: the only code that talks to clouds.

The operator depends on this package's public names only; provider libraries (libcloud)
stay behind ``skyfleet.connectors.libcloud``.
"""

from skyfleet.connectors import registry
from skyfleet.connectors.base import (
    CallObserver,
    Capabilities,
    CloudImage,
    CloudLocation,
    CloudNode,
    CloudSize,
    Connector,
    CreateRequest,
    CredentialConfig,
    Limits,
    NodeState,
    OwnerTags,
    SecretData,
)
from skyfleet.connectors.errors import (
    CapacityUnavailable,
    CircuitOpen,
    ConnectorError,
    InvalidCredentials,
    InvalidRequest,
    NotFound,
    OwnershipMismatch,
    Permanent,
    QuotaExceeded,
    Throttled,
    Transient,
    UnknownConnector,
    Unsupported,
)

__all__ = [
    "CallObserver",
    "Capabilities",
    "CapacityUnavailable",
    "CircuitOpen",
    "CloudImage",
    "CloudLocation",
    "CloudNode",
    "CloudSize",
    "Connector",
    "ConnectorError",
    "CreateRequest",
    "CredentialConfig",
    "InvalidCredentials",
    "InvalidRequest",
    "Limits",
    "NodeState",
    "NotFound",
    "OwnerTags",
    "OwnershipMismatch",
    "Permanent",
    "QuotaExceeded",
    "SecretData",
    "Throttled",
    "Transient",
    "UnknownConnector",
    "Unsupported",
    "registry",
]
