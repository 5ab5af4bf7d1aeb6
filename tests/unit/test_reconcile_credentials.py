"""Credential decisions: the verdict from a verify, and Secret keys in both spellings."""

from __future__ import annotations

import pytest

from skyfleet.contract import errors
from skyfleet.reconcile.credentials import secret_aliases, verdict_for

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "secret_found", "reason", "ready", "retry"),
    [
        (None, True, "Verified", True, False),
        (None, False, "SecretNotFound", False, False),
        (errors.InvalidCredentials("no"), True, "InvalidCredentials", False, False),
        (errors.Transient("5xx"), True, "Unreachable", False, True),
        (errors.Throttled("slow"), True, "Unreachable", False, True),
        (errors.CircuitOpen("open"), True, "Unreachable", False, True),
        (errors.UnknownConnector("x"), True, "UnknownConnector", False, False),
        (errors.Unsupported("x"), True, "UnsupportedProvider", False, False),
        (errors.UnknownParameter("authVersoin"), True, "UnknownParameter", False, False),
        (errors.InvalidRequest("bad"), True, "InvalidSpec", False, False),
        (errors.EndpointNotAllowed("link-local"), True, "EndpointNotAllowed", False, False),
        (OSError("refused"), True, "Unreachable", False, True),
    ],
)
def test_credential_verdicts(
    error: BaseException | None, secret_found: bool, reason: str, ready: bool, retry: bool
) -> None:
    v = verdict_for(error, secret_found=secret_found)
    assert (v.reason, v.ready, v.retry_soon) == (reason, ready, retry)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"accessKeyId": "A", "secretAccessKey": "S"},
            {"accessKeyId": "A", "secretAccessKey": "S", "access_key_id": "A", "secret_access_key": "S"},
        ),
        ({"aws_access_key_id": "A"}, {"aws_access_key_id": "A"}),
        ({"api-token": "T"}, {"api-token": "T", "api_token": "T"}),
        # an explicit snake_case key wins over the alias of its camelCase twin
        ({"accessKeyId": "camel", "access_key_id": "snake"}, {"accessKeyId": "camel", "access_key_id": "snake"}),
    ],
)
def test_secret_keys_reach_connectors_in_both_spellings(data: dict[str, str], expected: dict[str, str]) -> None:
    assert secret_aliases(data) == expected
