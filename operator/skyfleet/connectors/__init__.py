"""Cloud connectors: the only code that talks to clouds.

The operator depends on this package's public names only; provider libraries (libcloud)
stay behind ``skyfleet.connectors.libcloud``.
"""

from skyfleet.connectors import registry
from skyfleet.connectors.naming import vm_name
from skyfleet.contract import (
    BakedImage,
    CallObserver,
    Capabilities,
    CloudImage,
    CloudLocation,
    CloudNode,
    CloudSize,
    Connector,
    CreateRequest,
    CredentialConfig,
    ImageOwnerTags,
    ImageRequest,
    ImageState,
    Limits,
    NodeState,
    OwnerTags,
    SecretData,
)
from skyfleet.contract.endpoints import EndpointPolicy, TLSOptions
from skyfleet.contract.errors import (
    CapacityUnavailable,
    CircuitOpen,
    ConnectorError,
    EndpointNotAllowed,
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
    "BakedImage",
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
    "EndpointNotAllowed",
    "EndpointPolicy",
    "ImageOwnerTags",
    "ImageRequest",
    "ImageState",
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
    "TLSOptions",
    "Throttled",
    "Transient",
    "UnknownConnector",
    "Unsupported",
    "registry",
    "vm_name",
]
