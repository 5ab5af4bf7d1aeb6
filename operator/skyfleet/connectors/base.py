"""Moved to skyfleet.contract (types and the Connector interface); kept so connectors and plugins
written against ``skyfleet.connectors.base`` keep working."""

from skyfleet.contract import *  # noqa: F403
from skyfleet.contract import __all__  # noqa: F401
