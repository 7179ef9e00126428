"""HTTP connections to public addresses only, for a server that fetches the URLs its clients name.

Checking a host name and then letting the HTTP library resolve it again to connect leaves a gap: a DNS server can
answer a public address to the check and 127.0.0.1 to the connection (DNS rebinding). Here every new connection
resolves its host once, checks every address, and connects to a checked one; the Host header, SNI and the
certificate's host name check keep the name. Mounted on a requests session as PublicOnlyAdapter.
"""

from __future__ import annotations

import ipaddress
import socket
import sys

from requests.adapters import HTTPAdapter
from urllib3 import PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import create_connection

# Cloud metadata servers by name: they hand out the machine's credentials to anyone who can make it fetch a URL.
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})


class NotPublic(Exception):
    """A host that resolves to an address no client may make us fetch. Not an OSError: urllib3 neither retries
    nor wraps it, so it reaches the caller as it is."""


def public_addresses(host: str, port: int) -> list[str]:
    """The addresses host resolves to (one lookup), in the resolver's order; NotPublic when any of them is private,
    loopback, link-local, reserved, multicast or a cloud metadata server. socket.gaierror when it does not resolve."""
    host = host.rstrip(".").lower()
    if host in METADATA_HOSTS:
        raise NotPublic(f"{host} is a cloud metadata server")
    addresses = []
    for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP):
        address = str(info[4][0])
        ip = ipaddress.ip_address(address.split("%")[0])  # drop an IPv6 zone id
        mapped = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is loopback too
        if not mapped.is_global or mapped.is_multicast:
            raise NotPublic(f"{host} is a private address ({ip}); only public hosts are fetched here")
        addresses.append(address)
    return list(dict.fromkeys(addresses))


class _Pinned:
    """urllib3's _new_conn, connecting to the addresses public_addresses checked instead of resolving again."""

    def _new_conn(self) -> socket.socket:
        try:
            addresses = public_addresses(self.host, self.port)
        except (socket.gaierror, UnicodeError) as e:
            raise NameResolutionError(self.host, self, e) from e
        error: OSError | None = None
        for address in addresses:  # in turn, as socket.create_connection tries a name's addresses
            try:
                sock = create_connection((address, self.port), self.timeout, self.source_address, self.socket_options)
            except OSError as e:
                error = e
                continue
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        if isinstance(error, TimeoutError):
            message = f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            raise ConnectTimeoutError(self, message) from error
        raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


class PinnedHTTPConnection(_Pinned, HTTPConnection):
    pass


class PinnedHTTPSConnection(_Pinned, HTTPSConnection):
    pass


class _PoolManager(PoolManager):
    """Pools whose connections go to checked public addresses, except for the hosts exempted by name."""

    def __init__(self, allowed_hosts: frozenset[str], **kwargs):
        super().__init__(**kwargs)
        self.allowed_hosts = allowed_hosts

    def _new_pool(self, scheme: str, host: str, port: int, request_context=None) -> HTTPConnectionPool:
        pool = super()._new_pool(scheme, host, port, request_context)  # urllib3's seam for customising pools
        if host.rstrip(".").lower() not in self.allowed_hosts:
            pool.ConnectionCls = PinnedHTTPSConnection if scheme == "https" else PinnedHTTPConnection
        return pool


class PublicOnlyAdapter(HTTPAdapter):
    """A requests transport that connects only to public addresses (allowed_hosts: names exempt from the check).
    Proxies bypass it (the proxy resolves the name): use it on a session with trust_env off and no proxies."""

    def __init__(self, allowed_hosts: frozenset[str] = frozenset(), **kwargs):
        self.allowed_hosts = allowed_hosts  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs) -> None:
        self._pool_connections, self._pool_maxsize, self._pool_block = connections, maxsize, block
        self.poolmanager = _PoolManager(
            self.allowed_hosts, num_pools=connections, maxsize=maxsize, block=block, **pool_kwargs
        )
