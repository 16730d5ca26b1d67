"""Download an ``image_url`` without letting it reach inside the operator's network.

Every hop (the first URL and each redirect) is resolved, and every address it
resolves to must be globally routable, IPv4 embedded in IPv6 included, unless
the operator's allow-list names that host and port.  The connection then goes
to the checked address itself (Host header and TLS SNI keep the name), so a DNS
answer that changes between check and connect (DNS rebinding) cannot redirect
it.  The body is streamed into a file and cut off at the size limit.

The download is a coroutine: the caller bounds its total time (a server that
trickles a byte every few seconds never trips a per-read timeout), and a slow
server holds no thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Set
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The well-known NAT64 prefix (RFC 6052): the low 32 bits are the IPv4 destination.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IPv6 ranges refused whatever they embed: IPv4-compatible ::a.b.c.d (deprecated, RFC 4291),
# local-use NAT64 (RFC 8215), Teredo (RFC 4380) and site-local (deprecated, RFC 3879).
REFUSED_IPV6 = tuple(ipaddress.IPv6Network(n) for n in ("::/96", "64:ff9b:1::/48", "2001::/32", "fec0::/10"))


# What image_url may be: an absolute http(s) URL with a host (the OpenAPI schema
# publishes this pattern, so clients and server agree on every string).  Spaces
# are spelled out: "\\s" means more characters in Python than in JSON Schema.
SPACE = " \t\n\r\f\v"
_SPACE = r" \t\n\r\f\v"  # the same, inside a regex character class
URL_PATTERN = (rf"^[{_SPACE}]*[Hh][Tt][Tt][Pp][Ss]?://([^{_SPACE}/?#@\[\]]*@)?"
               rf"([^{_SPACE}/?#@\[\]:]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{{1,5}})?([/?#][^{_SPACE}]*)?[{_SPACE}]*$")
BLANK_PATTERN = rf"^[{_SPACE}]*$"
_URL = re.compile(URL_PATTERN)


class DownloadFailed(RuntimeError):
    """The image could not be downloaded (API state -3)."""


class DownloadTooLarge(RuntimeError):
    """The image at the URL is over the size limit (API state -5)."""


def check_url_syntax(url: str) -> None:
    """Raise ValueError unless ``url`` matches URL_PATTERN."""
    if not _URL.fullmatch(url):
        raise ValueError("image_url must be an absolute http:// or https:// URL with a host")


def is_public(addr: IPAddress) -> bool:
    """Whether ``addr`` is globally routable, judging IPv6 that carries IPv4 by the IPv4 inside."""
    if isinstance(addr, ipaddress.IPv6Address):
        if any(addr in net for net in REFUSED_IPV6):
            return False
        inner = addr.ipv4_mapped or addr.sixtofour
        if inner is None and addr in NAT64:
            inner = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if inner is not None:
            return is_public(inner)
    return addr.is_global and not addr.is_multicast


async def resolve_checked(host: str, port: int, allow: Set[tuple[str, int]]) -> IPAddress:
    """First address of ``host`` after checking that all of them may be reached."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:  # ValueError/UnicodeError: not a valid host name
        raise DownloadFailed(f"cannot resolve host {host!r}") from exc
    addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
    if (host.lower(), port) in allow:
        return addrs[0]
    for addr in addrs:
        if not is_public(addr) and (str(addr), port) not in allow:
            raise DownloadFailed(f"image_url host {host!r} resolves to a non-public address ({addr})")
    return addrs[0]


async def fetch_url(
    url: str,
    out: BinaryIO,
    *,
    max_bytes: int,
    allow: Set[tuple[str, int]] = frozenset(),
    connect_timeout: float = 5.0,
    read_timeout: float = 15.0,
    max_redirects: int = 5,
) -> None:
    """Write the body of ``url`` to ``out``, following at most ``max_redirects`` redirects.

    ``allow`` holds (host, port) pairs reachable although not public.  The
    timeouts bound connecting and each read; bound the total with asyncio.timeout.
    """
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(max_redirects + 1):
            try:
                check_url_syntax(url)
                parts = urlsplit(url.strip(SPACE))
                host = parts.hostname or ""
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError as exc:  # e.g. a port over 65535, a malformed IPv6 address
                raise DownloadFailed(f"not a usable image URL: {url}") from exc
            addr = await resolve_checked(host, port, allow)
            netloc = f"[{addr}]" if addr.version == 6 else str(addr)
            pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
            host_header = host if parts.port is None else f"{host}:{parts.port}"
            try:
                async with client.stream("GET", pinned, headers={"Host": host_header},
                                         extensions={"sni_hostname": host}) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise DownloadFailed(f"image_url answered HTTP {resp.status_code}")
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise DownloadTooLarge(_too_large(max_bytes))
                    size = 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise DownloadTooLarge(_too_large(max_bytes))
                        out.write(chunk)
                    return
            except httpx.TimeoutException as exc:
                raise DownloadFailed("timed out downloading image_url: the server stopped sending") from exc
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                raise DownloadFailed(f"downloading image_url failed: {exc}") from exc
    raise DownloadFailed(f"image_url redirected more than {max_redirects} times")


def _too_large(max_bytes: int) -> str:
    return f"the image at image_url is larger than {max_bytes // (1024 * 1024)} MB"
