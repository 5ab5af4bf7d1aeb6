"""Provider adapters: how each cloud spells tags, userdata, tokens, paging and errors."""

from skyfleet.connectors.libcloud.adapters.azure import AzureARMAdapter
from skyfleet.connectors.libcloud.adapters.base import ProviderAdapter
from skyfleet.connectors.libcloud.adapters.digitalocean import DigitalOceanAdapter
from skyfleet.connectors.libcloud.adapters.ec2 import EC2Adapter
from skyfleet.connectors.libcloud.adapters.gce import GCEAdapter
from skyfleet.connectors.libcloud.adapters.linode import LinodeAdapter
from skyfleet.connectors.libcloud.adapters.openstack import OpenStackAdapter

ADAPTERS: dict[str, type[ProviderAdapter]] = {
    adapter.provider: adapter
    for adapter in (EC2Adapter, OpenStackAdapter, GCEAdapter, AzureARMAdapter, DigitalOceanAdapter, LinodeAdapter)
}

__all__ = ["ADAPTERS", "ProviderAdapter"]
