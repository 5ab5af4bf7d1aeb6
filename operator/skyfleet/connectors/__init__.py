"""Cloud connectors: the only code that talks to clouds.

The operator depends on this package's public names only; provider libraries (libcloud)
stay behind ``skyfleet.connectors.libcloud``. The vocabulary they speak (types, errors, the
``Connector`` interface) is ``skyfleet.contract``, re-exported here for code written against
this package.
"""

from skyfleet.connectors import registry
from skyfleet.connectors.naming import vm_name
from skyfleet.contract import *  # noqa: F403
from skyfleet.contract import __all__ as _contract

__all__ = [*_contract, "registry", "vm_name"]  # noqa: PLE0604
