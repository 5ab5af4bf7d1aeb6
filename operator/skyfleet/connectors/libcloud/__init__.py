"""Apache Libcloud connector with per-provider adapters."""

from skyfleet.connectors.libcloud.connector import LibcloudConnector

__all__ = ["LibcloudConnector"]
