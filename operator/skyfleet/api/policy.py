"""The admission policy that keeps a CloudCredential's Secret while the credential exists.

A ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1) whose parameters are the
CloudCredentials of the admitted Secret's own namespace: deleting a Secret is refused while any
of them names it in ``spec.secretRef.name``. A CloudCredential stays until no Instance needs it
(the operator's finalizer), so the keys outlive every VM that needs them, and the operator itself
needs no write access to Secrets at all.

``oldObject`` is used rather than ``request.name`` because ``deletecollection`` (and so namespace
deletion) admits each item with an empty request name. ``failurePolicy: Ignore`` because a policy
that cannot be evaluated (its CRD removed, say) must not refuse every Secret deletion in the
cluster; the expression itself guards every field it reads, so it does not fail on real input.
"""

from __future__ import annotations

from typing import Any

from skyfleet.api.cloudcredential import CloudCredential, CloudCredentialSpec, SecretRef
from skyfleet.api.common import API_VERSION

__all__ = ["POLICY_FILENAME", "POLICY_NAME", "secret_protection"]

POLICY_NAME = "skyfleet-credential-secrets"
POLICY_FILENAME = f"policy-{POLICY_NAME.removeprefix('skyfleet-')}.yaml"
ADMISSION_API = "admissionregistration.k8s.io/v1"


def _secret_ref_path() -> str:
    """``params.spec.secretRef.name`` spelt with the wire names of the models, so a rename follows."""
    ref = CloudCredentialSpec.model_fields["secret_ref"].alias or "secret_ref"
    name = SecretRef.model_fields["name"].alias or "name"
    return f"{ref}.{name}"


def validation() -> dict[str, Any]:
    ref, name = _secret_ref_path().split(".")
    names_it = f"params.spec.{ref}.{name} == oldObject.metadata.name"
    return {
        "expression": f"!has(params.spec) || !has(params.spec.{ref}) || !({names_it})",
        "messageExpression": (
            "'Secret ' + oldObject.metadata.name + ' holds the keys of CloudCredential ' + params.metadata.name"
            " + ': delete the CloudCredential first; it goes once no Instance needs it, then the Secret may go'"
        ),
        "reason": "Forbidden",
    }


def secret_protection(name: str = POLICY_NAME) -> list[dict[str, Any]]:
    """The policy and its binding, as ``kubectl apply`` takes them."""
    policy = {
        "apiVersion": ADMISSION_API,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "skyfleet"}},
        "spec": {
            "failurePolicy": "Ignore",
            "paramKind": {"apiVersion": API_VERSION, "kind": CloudCredential.crd.kind},
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["DELETE"], "resources": ["secrets"]}
                ]
            },
            "validations": [validation()],
        },
    }
    binding = {
        "apiVersion": ADMISSION_API,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "skyfleet"}},
        "spec": {
            "policyName": name,
            # No namespace: the parameters are looked up in the admitted Secret's own namespace.
            "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
            "validationActions": ["Deny"],
        },
    }
    return [policy, binding]
