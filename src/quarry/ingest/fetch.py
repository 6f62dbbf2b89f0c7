"""Fetching a document from a URL, bounded in time and size, and only from public addresses.

A URL document makes the server open a connection where the caller says, so by default it may
only reach addresses on the public internet: loopback, private, link-local (a cloud's metadata
service), carrier-grade NAT, multicast and reserved ranges are refused, or any user with an
editor key could read the services beside quarry (server-side request forgery).
``QUARRY_FETCH_ALLOWED_NETWORKS`` opens chosen ranges, an intranet wiki's for instance.

The check is made where the connection is opened, in the network backend under httpx: the
host is resolved once, each address it resolves to is checked, and the connection goes to an
address that passed. So a redirect is checked like the first request, and a name that
resolves to another address a moment later (DNS rebinding) cannot slip past the check. No
proxy is used (one from the environment would be the address checked, not the document's).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx
import structlog

from quarry.errors import (
    DocumentTooLarge,
    InvalidInput,
    UrlFetchFailed,
    UrlNotAllowed,
    UrlTimeout,
)

MAX_REDIRECTS = 5
log = structlog.get_logger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Fetched:
    data: bytes
    filename: str
    media_type: str | None
    final_url: str


# IPv6 ranges that carry an IPv4 address in their last 32 bits, which is where they lead:
# NAT64's well-known and local-use prefixes (RFC 6052, 8215) and the deprecated
# IPv4-compatible form (::a.b.c.d).
_CARRYING_IPV4 = tuple(
    ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96")
)


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet: not loopback, private, link-local,
    shared (carrier-grade NAT), reserved, unspecified or multicast. An IPv6 address that
    carries an IPv4 one (``::ffff:127.0.0.1``, 6to4, NAT64, ``::10.0.0.1``) is judged as
    the IPv4 address it leads to; Teredo and site-local IPv6 are refused."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = _carried_ipv4(address)
        if inner is not None:
            return is_public(inner)
        if address.teredo is not None or address.is_site_local:
            return False
    return address.is_global and not address.is_multicast


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _CARRYING_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def allowed(address: IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """Whether a fetch may connect to ``address``: it is public, or in an allowed network
    (an IPv6 address that carries an IPv4 one judged, as by ``is_public``, by that one)."""
    if isinstance(address, ipaddress.IPv6Address):
        address = _carried_ipv4(address) or address
    return is_public(address) or any(address in network for network in networks)


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, connecting only to resolved addresses that are allowed."""

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        self._networks = tuple(networks)
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await _resolve(host, port, timeout)
        usable = [address for address in addresses if allowed(address, self._networks)]
        if not usable:
            # The addresses go to the log, not to the caller: they would map internal names.
            log.info("url not allowed", host=host, addresses=[str(a) for a in addresses])
            raise UrlNotAllowed(_no_address(host))
        error: httpcore.ConnectError | None = None
        for address in usable:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:  # the next address, as a resolver's caller would
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise UrlNotAllowed("a URL document cannot be fetched over a Unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


async def _resolve(host: str, port: int, limit_s: float | None) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        with anyio.fail_after(limit_s):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode
        log.info("url host not resolved", host=host, error=str(exc))
        raise UrlNotAllowed(_no_address(host)) from None
    found: list[IPAddress] = []
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
    if not found:
        log.info("url host not resolved", host=host, error="no IPv4 or IPv6 address")
        raise UrlNotAllowed(_no_address(host))
    return found


def _no_address(host: str) -> str:
    """One answer for a name that does not resolve and one that resolves only to addresses
    fetches may not reach: two answers would tell a caller which internal names exist."""
    return (
        f"{host} has no address that may be fetched: it does not resolve, or not to a public "
        "address (QUARRY_FETCH_ALLOWED_NETWORKS can allow other networks)"
    )


class _CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over ``_CheckedBackend``. httpx takes no network backend, so the
    connection pool it built is replaced by the same pool over the checked backend."""

    def __init__(self, networks: Sequence[IPNetwork]) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            network_backend=_CheckedBackend(networks),
        )


async def fetch(
    url: str,
    *,
    timeout_s: float,
    max_bytes: int,
    allowed_networks: Sequence[IPNetwork] = (),
) -> Fetched:
    _check_url(url)
    try:
        # httpx's timeout bounds each connect and read; the deadline bounds the whole fetch,
        # so a server sending a byte now and then cannot hold the request open.
        with anyio.fail_after(timeout_s):
            return await _get(url, timeout_s, max_bytes, allowed_networks)
    except UrlNotAllowed as exc:  # from the backend, which knows the host but not the URL
        raise UrlNotAllowed(f"{url}: {exc.detail}", url=url) from None
    except (httpx.TimeoutException, TimeoutError):
        raise UrlTimeout(f"{url} did not answer within {timeout_s:g}s", url=url) from None
    except httpx.TooManyRedirects:
        raise UrlFetchFailed(f"{url} redirects more than {MAX_REDIRECTS} times", url=url) from None
    except httpx.HTTPError as exc:
        raise UrlFetchFailed(f"{url} could not be fetched: {exc}", url=url) from None


def _check_url(url: str) -> None:
    """Refuse what is not an absolute http(s) URL httpx can request, before any connection:
    a malformed host or port would otherwise fail deep inside httpx or the resolver."""
    try:
        parsed = httpx.URL(url)
        host, port = parsed.host, parsed.port  # httpx checks a port's digits, not its range
    except (httpx.InvalidURL, ValueError) as exc:  # IDNA errors are ValueErrors
        raise InvalidInput(f"url is not a valid URL: {exc}", field="url") from None
    if parsed.scheme not in ("http", "https") or not host:
        raise InvalidInput("url must be an absolute http:// or https:// URL", field="url")
    if port is not None and not 0 < port < 65536:
        raise InvalidInput(f"url has port {port}; a port is 1 to 65535", field="url")


async def _get(
    url: str, timeout_s: float, max_bytes: int, allowed_networks: Sequence[IPNetwork]
) -> Fetched:
    async with (
        httpx.AsyncClient(
            timeout=timeout_s,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            transport=_CheckedTransport(allowed_networks),
            trust_env=False,
        ) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code >= 400:
            raise UrlFetchFailed(f"{url} answered HTTP {response.status_code}", url=url)
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise DocumentTooLarge(_too_large(url, max_bytes))
        body = bytearray()
        async for piece in response.aiter_bytes():
            body.extend(piece)
            if len(body) > max_bytes:
                raise DocumentTooLarge(_too_large(url, max_bytes))
        final = str(response.url)
        media_type = response.headers.get("content-type")
    name = PurePosixPath(urlsplit(final).path).name or "index.html"
    return Fetched(bytes(body), name, media_type, final)


def _too_large(url: str, max_bytes: int) -> str:
    return f"{url} is larger than the limit of {max_bytes} bytes (QUARRY_MAX_UPLOAD_BYTES)"
