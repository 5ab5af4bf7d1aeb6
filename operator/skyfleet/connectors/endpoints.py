"""Moved to skyfleet.contract.endpoints; kept so code written against this path keeps working."""

from skyfleet.contract.endpoints import *  # noqa: F403
from skyfleet.contract.endpoints import __all__  # noqa: F401
