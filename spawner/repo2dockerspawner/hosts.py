"""Which repository hosts the hub may contact, and at which addresses.

A repository URL is attacker-controlled, and the hub runs `git ls-remote` against it from
inside the hub's network (so does the build, from its node). Left open, a URL could reach the
hub's own services, a cloud's metadata endpoint or a private range, and the answers
(reached, refused, timed out) would map them. So, unless an admin names a host:

* a host given as an IP address is refused (names are what forges have);
* a name is resolved first, and refused if *any* of its addresses is not public (loopback,
  link-local, private, unique-local, unspecified, shared, ...);
* git is then pinned to exactly the addresses checked (`http.curloptResolve`), so a second,
  different DNS answer (rebinding) cannot send it elsewhere, and redirects are not followed.

An admin opens internal hosts by naming them in `allowed_repo_hosts` with a pattern other than
the catch-all `*` (the test environment's git server, an institute's GitLab): named hosts are
trusted wherever they resolve.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from repo2docker_buildcore.contract import InvalidBuildRequest, url_host

from .options import RepoPolicy

Resolver = Callable[[str, int], Awaitable[list[str]]]
DEFAULT_PORTS = {"https": 443, "http": 80, "git": 9418, "ssh": 22}


async def getaddrinfo(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolver gives them to git."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, NAT64 (64:ff9b::/96 and the
    local-use 64:ff9b:1::/48, the last 32 bits), 6to4 and Teredo. A translator on the path
    delivers to that IPv4 address, so it is what must be public."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    return None


def not_public(address: str) -> str | None:
    """Why an address belongs to a private or local network, or None for a public one."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and embedded_ipv4(ip) is not None:
        ip = embedded_ipv4(ip)
    for reason, applies in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("unique-local", isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL),
        ("private", ip.is_private),
    ):
        if applies:
            return reason
    return None if ip.is_global else "non-public"


_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _refused(host: str, reason: str) -> InvalidBuildRequest:
    return InvalidBuildRequest(
        f"the host {host} is not allowed on this hub: it is a {reason} address, on a private or local network "
        f"rather than the internet (an administrator can name such hosts in allowed_repo_hosts)"
    )


async def contact_addresses(url: str, policy: RepoPolicy, resolve: Resolver = getaddrinfo) -> list[str]:
    """The addresses git must use for `url` (empty: a named host, contacted as it resolves),
    or InvalidBuildRequest with a message for the user."""
    host, port = url_host(url)
    if policy.names(host):
        return []
    if _literal(host):
        reason = not_public(host)
        if reason:
            raise _refused(host, reason)
        raise InvalidBuildRequest(
            f"the host {host} is not allowed on this hub: give the repository by its name, not an address"
        )
    try:
        addresses = await resolve(host, port or DEFAULT_PORTS.get(urlsplit(url).scheme.lower(), 443))
    except OSError:
        raise InvalidBuildRequest(
            f"the repository host {host} could not be reached: its name does not resolve"
        ) from None
    for address in addresses:
        reason = not_public(address)
        if reason:
            raise _refused(host, reason)
    if not addresses:
        raise InvalidBuildRequest(f"the repository host {host} could not be reached: its name has no address")
    return addresses


def curl_resolve(url: str, addresses: list[str]) -> str | None:
    """git's `http.curloptResolve` entry pinning the URL's host to `addresses` (libcurl's
    CURLOPT_RESOLVE 'host:port:addr[,addr]'), or None when there is nothing to pin."""
    if not addresses:
        return None
    host, port = url_host(url)
    port = port or DEFAULT_PORTS.get(urlsplit(url).scheme.lower(), 443)
    return f"{host}:{port}:" + ",".join(f"[{a}]" if ":" in a else a for a in addresses)
