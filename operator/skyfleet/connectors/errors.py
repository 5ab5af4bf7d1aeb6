"""Moved to skyfleet.contract.errors; kept so code written against this path keeps working."""

from skyfleet.contract.errors import *  # noqa: F403
from skyfleet.contract.errors import __all__  # noqa: F401
