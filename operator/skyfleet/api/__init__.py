"""Typed API of the skyfleet.io group: the pydantic models are the single source of the CRDs."""

from skyfleet.api.cloudcredential import CloudCredential, CloudCredentialSpec, CloudCredentialStatus
from skyfleet.api.common import API_VERSION, GROUP, VERSION, Condition, ConditionStatus, ObjectMeta, Resource
from skyfleet.api.deployment import Deployment, DeploymentSpec, DeploymentStatus, NodeGroup
from skyfleet.api.image import Image, ImageSpec, ImageStatus
from skyfleet.api.instance import Instance, InstanceSpec, InstanceStatus
from skyfleet.api.scalingpolicy import ScalingPolicy, ScalingPolicySpec, ScalingPolicyStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "CloudCredential",
    "CloudCredentialSpec",
    "CloudCredentialStatus",
    "Condition",
    "ConditionStatus",
    "Deployment",
    "DeploymentSpec",
    "DeploymentStatus",
    "Image",
    "ImageSpec",
    "ImageStatus",
    "Instance",
    "InstanceSpec",
    "InstanceStatus",
    "NodeGroup",
    "ObjectMeta",
    "Resource",
    "ScalingPolicy",
    "ScalingPolicySpec",
    "ScalingPolicyStatus",
]
