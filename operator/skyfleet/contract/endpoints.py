"""Where a tenant's CloudCredential may make the operator connect, and how it trusts TLS there.

Every namespace is a stranger. A CloudCredential names a URL (``spec.endpoint.url``, and
adapter parameters such as Azure's login endpoint or OpenStack's compute URL), and the operator
then connects there with its own network position: from inside the cluster, next to the cloud
metadata service (169.254.169.254), the API server, every Service and the pod network. So a
destination is refused unless it is plainly a public cloud endpoint, or the operator's own
allow-list names it:

* names that only exist inside a cluster or a host (``*.svc``, ``*.cluster.local``,
  ``*.internal``, ``*.local``, ``localhost``) are refused as written;
* every address a name resolves to, at connect time, must be globally routable (no loopback,
  link-local, private, shared or reserved range) -- a harmless-looking name may resolve to
  the metadata service, and DNS answers can change between a check and a connection;
* plain http is refused for any host the allow-list does not name.

The allow-list (``--allow-endpoint``, ``SKYFLEET_ALLOW_ENDPOINT``) takes host names
(``keystone.lab.example.org``), wildcards for subdomains (``*.lab.example.org``), IP
addresses and CIDRs (``10.20.0.0/16``, ``::1``). A listed name may resolve to any address and
may use http; a listed address or network makes those addresses reachable (over http too when
the URL names the address itself).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from skyfleet.contract.errors import EndpointNotAllowed

__all__ = ["EndpointPolicy", "TLSOptions", "parse_allow_list"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that resolve only inside a cluster, a cloud's private DNS or one host. ".internal" covers
# metadata.google.internal and EC2's private names; ".local" is mDNS.
_INTERNAL_SUFFIXES = (".svc", ".cluster.local", ".internal", ".local", ".localhost", ".localdomain", ".home.arpa")
_INTERNAL_NAMES = frozenset({"localhost"})
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


@dataclass(frozen=True)
class TLSOptions:
    """How to trust the endpoint's certificate: a PEM bundle that replaces the system's trust
    store for this credential, or (test clouds only) no verification at all."""

    ca_bundle: str | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False

    def __post_init__(self) -> None:
        if self.ca_bundle is not None and self.insecure_skip_verify:
            raise ValueError("a CA bundle and insecureSkipTlsVerify exclude each other")


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def _kind(address: IPAddress) -> str | None:
    """Why ``address`` is not a public cloud endpoint, or None when it is one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_unspecified or not address.is_global:
        return "an address that is not publicly routable"
    return None


def _internal_name(host: str) -> bool:
    return host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES)


@dataclass(frozen=True)
class EndpointPolicy:
    """The operator's allow-list and the rules above. The default lists nothing."""

    hosts: frozenset[str] = frozenset()
    suffixes: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> EndpointPolicy:
        hosts: set[str] = set()
        suffixes: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            address = _address(entry)
            if "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry, strict=False))
                except ValueError:
                    raise ValueError(f"allow-list entry {raw!r} is not a valid CIDR") from None
            elif address is not None:
                networks.append(ipaddress.ip_network(address))
            elif entry.startswith("*.") and _HOST_NAME.match(entry[2:]):
                suffixes.add(entry[1:])
            elif _HOST_NAME.match(entry):
                hosts.add(entry)
            else:
                raise ValueError(
                    f"allow-list entry {raw!r} is neither a host name, a *.domain wildcard, an IP address nor a CIDR"
                )
        return cls(frozenset(hosts), frozenset(suffixes), tuple(networks))

    def __str__(self) -> str:
        listed = sorted(self.hosts) + sorted(f"*{s}" for s in self.suffixes) + [str(n) for n in self.networks]
        return ", ".join(listed) or "(empty)"

    def names(self, host: str) -> bool:
        """Whether the allow-list names ``host`` itself (a name, or an address literal)."""
        host = host.lower().rstrip(".")
        address = _address(host)
        if address is not None:
            return self.covers(address)
        return host in self.hosts or any(host.endswith(s) for s in self.suffixes)

    def covers(self, address: IPAddress) -> bool:
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return any(a in n for n in self.networks for a in (address, mapped) if a is not None and a.version == n.version)

    def check_url(self, url: str, *, what: str = "endpoint") -> None:
        """Refuse ``url`` as written (scheme and host); addresses are checked when connecting."""
        parts = urlsplit(url if "://" in url else f"https://{url}")
        scheme = parts.scheme.lower()
        try:
            host = (parts.hostname or "").rstrip(".")
            parts.port  # noqa: B018 - parsing the port validates it
        except ValueError:
            raise EndpointNotAllowed(f"the {what} is not a valid URL", code="EndpointNotAllowed") from None
        if scheme not in ("http", "https") or not host:
            raise EndpointNotAllowed(f"the {what} must be an https:// URL with a host", code="EndpointNotAllowed")
        if self.names(host):
            return
        if scheme == "http":
            raise EndpointNotAllowed(
                f"the {what} uses plain http, which is allowed only for hosts on the operator's endpoint allow-list",
                code="EndpointNotAllowed",
            )
        address = _address(host)
        why = _kind(address) if address is not None else ("a cluster-internal name" if _internal_name(host) else None)
        if why is not None:
            raise EndpointNotAllowed(
                f"the {what} host {host} is {why}, which is reachable only when the operator's endpoint "
                "allow-list names it",
                code="EndpointNotAllowed",
            )

    def check_address(self, host: str, address: str) -> None:
        """Refuse a connection to ``address``, which ``host`` resolved to."""
        if self.names(host):
            return
        parsed = _address(address)
        if parsed is None:
            raise EndpointNotAllowed(f"{host} resolved to something that is not an IP address")
        if self.covers(parsed):
            return
        why = _kind(parsed)
        if why is not None:
            raise EndpointNotAllowed(
                f"{host} resolves to {why}, which is reachable only when the operator's endpoint allow-list names it",
                code="EndpointNotAllowed",
            )


def parse_allow_list(entries: Iterable[str]) -> EndpointPolicy:
    """``EndpointPolicy.parse``; a ``ValueError`` names the entry that is wrong."""
    return EndpointPolicy.parse(entries)
