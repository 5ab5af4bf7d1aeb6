"""Skyfleet: a Kubernetes operator that runs multi-tier applications as fleets of VMs on IaaS clouds."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skyfleet")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
