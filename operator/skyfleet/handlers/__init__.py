"""Thin kopf adapters: read objects, call reconcile and connectors, write status and events.

Importing this package registers every handler with kopf's default registry.
"""

from skyfleet.handlers import (
    bake,
    credentials,
    deployments,
    heap,
    images,
    indexes,
    instances,
    memtrace,
    observe,
    scaling,
)

__all__ = [
    "bake",
    "credentials",
    "deployments",
    "heap",
    "images",
    "indexes",
    "instances",
    "memtrace",
    "observe",
    "scaling",
]
