"""Download an ``image_url`` without letting it reach inside the operator's network.

Every hop (the first URL and each redirect) is resolved, and every address it
resolves to must be public unless an operator allow-list names its network.
The connection then goes to the checked address itself (Host header and TLS
SNI keep the name), so a DNS answer that changes between check and connect
(DNS rebinding) cannot redirect it.  The body is streamed and cut off at the
size limit.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit

import httpx

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DownloadFailed(RuntimeError):
    """The image could not be downloaded (API state -3)."""


class DownloadTooLarge(RuntimeError):
    """The image at the URL is over the size limit (API state -5)."""


def check_url_syntax(url: str) -> None:
    """Raise ValueError unless ``url`` is an absolute http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("image_url must be an absolute http:// or https:// URL")


def _is_public(addr: IPAddress) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not (
        addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_multicast
        or addr.is_reserved or addr.is_unspecified or not addr.is_global
    )


def resolve_checked(host: str, port: int, allow: Sequence[Network]) -> IPAddress:
    """First address of ``host`` after checking that all of them may be reached."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DownloadFailed(f"cannot resolve host {host!r}") from exc
    addrs = [ipaddress.ip_address(info[4][0]) for info in infos]
    for addr in addrs:
        if not _is_public(addr) and not any(addr in net for net in allow):
            raise DownloadFailed(f"image_url host {host!r} resolves to a non-public address ({addr})")
    return addrs[0]


def fetch_url(
    url: str,
    *,
    max_bytes: int,
    allow: Sequence[Network] = (),
    connect_timeout: float = 5.0,
    read_timeout: float = 15.0,
    max_redirects: int = 5,
) -> bytes:
    """Body of ``url`` (following at most ``max_redirects`` redirects)."""
    timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout)
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(max_redirects + 1):
            try:
                check_url_syntax(url)
            except ValueError as exc:
                raise DownloadFailed(f"redirect to an unsupported URL: {url}") from exc
            parts = urlsplit(url)
            host = parts.hostname or ""
            port = parts.port or (443 if parts.scheme == "https" else 80)
            addr = resolve_checked(host, port, allow)
            netloc = f"[{addr}]" if addr.version == 6 else str(addr)
            pinned = parts._replace(netloc=f"{netloc}:{port}").geturl()
            host_header = host if parts.port is None else f"{host}:{parts.port}"
            try:
                with client.stream("GET", pinned, headers={"Host": host_header},
                                   extensions={"sni_hostname": host}) as resp:
                    if resp.is_redirect and "location" in resp.headers:
                        url = urljoin(url, resp.headers["location"])
                        continue
                    if resp.status_code != 200:
                        raise DownloadFailed(f"image_url answered HTTP {resp.status_code}")
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise DownloadTooLarge(_too_large(max_bytes))
                    body = bytearray()
                    for chunk in resp.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise DownloadTooLarge(_too_large(max_bytes))
                    return bytes(body)
            except httpx.TimeoutException as exc:
                raise DownloadFailed("timed out downloading image_url") from exc
            except httpx.HTTPError as exc:
                raise DownloadFailed(f"downloading image_url failed: {exc}") from exc
    raise DownloadFailed(f"image_url redirected more than {max_redirects} times")


def _too_large(max_bytes: int) -> str:
    return f"the image at image_url is larger than {max_bytes // (1024 * 1024)} MB"
