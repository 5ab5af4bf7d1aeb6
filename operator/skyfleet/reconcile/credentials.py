"""What a credential check means for the CloudCredential's Ready condition."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from skyfleet.contract import errors

__all__ = ["SECRET_NOT_FOUND", "Verdict", "secret_aliases", "verdict_for"]

SECRET_NOT_FOUND = "SecretNotFound"  # noqa: S105 - a condition reason, not a secret


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str
    phase: str
    # Whether trying again soon can help (network) or a human must act (bad keys, bad spec).
    retry_soon: bool


_BY_ERROR: tuple[tuple[type[errors.ConnectorError], str, bool], ...] = (
    (errors.EndpointNotAllowed, "EndpointNotAllowed", False),
    (errors.InvalidCredentials, "InvalidCredentials", False),
    (errors.UnknownConnector, "UnknownConnector", False),
    (errors.UnknownParameter, "UnknownParameter", False),
    (errors.Unsupported, "UnsupportedProvider", False),
    (errors.InvalidRequest, "InvalidSpec", False),
    (errors.Throttled, "Unreachable", True),
    (errors.Transient, "Unreachable", True),
    (errors.Permanent, "VerificationFailed", False),
)


def verdict_for(error: BaseException | None, *, secret_found: bool = True) -> Verdict:
    """Ready condition for one verification: ``error`` is what the connector raised, if anything."""
    if not secret_found:
        return Verdict(False, SECRET_NOT_FOUND, "Failed", False)
    if error is None:
        return Verdict(True, "Verified", "Verified", False)
    for cls, reason, retry in _BY_ERROR:
        if isinstance(error, cls):
            return Verdict(False, reason, "Failed", retry)
    if isinstance(error, errors.ConnectorError):
        return Verdict(False, "VerificationFailed", "Failed", error.retryable)
    # Anything else (connection refused below the connector, DNS): the cloud is not reachable.
    return Verdict(False, "Unreachable", "Failed", True)


_CAMEL = re.compile(r"(?<!^)([A-Z])")


def secret_aliases(data: Mapping[str, str]) -> dict[str, str]:
    """Secret keys as written (``accessKeyId``, the Kubernetes habit) plus snake_case aliases.

    Connectors name secret values the way their SDKs do (``access_key_id``); users write Secrets
    the Kubernetes way. Both spellings reach the connector; a key written both ways keeps the
    value written for that exact spelling.
    """
    out = dict(data)
    for key, value in data.items():
        out.setdefault(_CAMEL.sub(r"_\1", key).lower().replace("-", "_"), value)
    return out
