"""Cloud connectors: the only code that talks to clouds.

The operator depends on this package's public names only; provider libraries (libcloud)
stay behind ``skyfleet.connectors.libcloud``.
"""

from skyfleet.connectors import registry
from skyfleet.connectors.base import (
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
from skyfleet.connectors.endpoints import EndpointPolicy, TLSOptions
from skyfleet.connectors.errors import (
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
    UnknownParameter,
    Unsupported,
)
from skyfleet.connectors.naming import vm_name

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
    "UnknownParameter",
    "Unsupported",
    "registry",
    "vm_name",
]
