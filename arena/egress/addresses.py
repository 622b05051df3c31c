"""Where the arena may send a request: the endpoint address policy and the vetted HTTP client.

A lab's endpoint must not make the arena call into its own network (SSRF): base URLs are http(s) without
credentials or a query; every address the host resolves to is checked (`address_problem`) when an endpoint is
registered or changed and again before every call, and the client itself connects only to addresses the policy
accepts, closing the window between the check and the connection (DNS rebinding).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

from arena.egress import providers
from arena.errors import BadRequest, Rejected

RESOLVE_TIMEOUT = 5.0


# Cloud metadata services that are not link-local (169.254.169.254 and fd00:ec2::254 are refused as such anyway,
# listed for the message): Alibaba's 100.100.100.200 sits in shared address space, AWS's IPv6 one in fc00::/7.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def validate_base_url(url: str) -> str:
    """An endpoint's base URL: http or https, a host, no user name or password in it (those would be stored
    in clear and shown to operators; the key goes in the encrypted api_key instead). Trailing '/' removed."""
    url = (url or "").strip()
    try:
        parts = urlsplit(url)
        parts.port  # raises ValueError for a port that is not a number or out of range
    except ValueError as e:
        raise BadRequest("invalid_base_url", f"the base URL {url!r} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest("invalid_base_url", f"the base URL {url!r} must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise BadRequest(
            "invalid_base_url", "the base URL must not contain a user name or password; pass the key as the API key"
        )
    if not parts.hostname:
        raise BadRequest("invalid_base_url", f"the base URL {url!r} has no host")
    if parts.fragment:
        raise BadRequest("invalid_base_url", f"the base URL {url!r} must not have a #fragment")
    if parts.query:  # the arena appends /chat/completions, and a query is where keys hide in plain text
        raise BadRequest("invalid_base_url", f"the base URL {url!r} must not have a ?query; pass a key as the API key")
    return url.rstrip("/")


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (bounded in time: a resolver can hang far longer than a request)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(socket.getaddrinfo, host, port, 0, socket.SOCK_STREAM)
        try:
            infos = future.result(timeout=RESOLVE_TIMEOUT)
        except FutureTimeout:
            raise Rejected("endpoint_unsafe", f"resolving {host!r} took more than {RESOLVE_TIMEOUT:g} s") from None
        except (socket.gaierror, UnicodeError, OSError) as e:
            raise Rejected("endpoint_unreachable", f"cannot resolve {host!r}: {e}") from None
    return sorted({info[4][0] for info in infos})


def address_problem(address: str, *, allow_private: bool) -> str | None:
    """Why the arena must not call `address`, or None. Private and loopback only with `allow_private`."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = (
            ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        )
        if embedded is not None:
            return address_problem(str(embedded), allow_private=allow_private)
    if ip in METADATA_ADDRESSES:
        return f"{ip} is a cloud metadata address"
    if ip.is_link_local:
        return f"{ip} is a link-local address"
    if ip.is_multicast or ip.is_unspecified:
        return f"{ip} is not a unicast address"
    if ip.is_loopback or ip.is_private:
        return (
            None
            if allow_private
            else (
                f"{ip} is a private or loopback address (the operator setting ARENA_ALLOW_PRIVATE_ENDPOINTS allows it)"
            )
        )
    if ip.is_reserved:
        return f"{ip} is a reserved address"
    if not ip.is_global and not allow_private:  # shared address space (100.64/10) and the like
        return f"{ip} is not a public address (the operator setting ARENA_ALLOW_PRIVATE_ENDPOINTS allows it)"
    return None


def endpoint_client(*, allow_private: bool):
    """The HTTP client for labs' endpoints: it connects only to addresses `address_problem` accepts, checked on
    the addresses it dials (`check_endpoint_address` before a call gives the clear message; this closes the
    window between that check and the connection)."""
    return providers.vetted_client(
        ("labs", allow_private), functools.partial(address_problem, allow_private=allow_private)
    )


def check_endpoint_address(base_url: str, *, allow_private: bool) -> None:
    """Refuse a base URL whose host is, or resolves to, any address the arena must not call."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for address in resolve_host(parts.hostname, port):
        problem = address_problem(address, allow_private=allow_private)
        if problem:
            raise Rejected("endpoint_unsafe", f"the endpoint's host {parts.hostname!r} is refused: {problem}")
