"""Thin kopf adapters: read objects, call reconcile and connectors, write status and events."""
