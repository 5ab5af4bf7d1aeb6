"""Typed API of the skyfleet.io group: the pydantic models are the single source of the CRDs."""
