"""Where `ssd-demo --web` listens and who may watch: `[HOST:]PORT` parsed and checked, and
the access token rule.

Bound to a loopback address (127.0.0.1 by default, ::1, localhost) the viewer needs no
token: only this machine reaches it (an SSH tunnel brings it to a laptop). Any other address
(0.0.0.0, a LAN address, a host name) makes it reachable from the network, so it always
needs a token: the one given (--web-token or SSD_DEMO_WEB_TOKEN) or one generated at start
and printed with the URL. Nothing here opens a socket.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from ssd_edge.common.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
TOKEN_ENV = "SSD_DEMO_WEB_TOKEN"
MIN_TOKEN_CHARS = 16
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~-]+")  # URL-safe as it is: no escaping in ?token=
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*")


@dataclass(frozen=True)
class WebAddress:
    """host (an IP literal without brackets, or a host name) and port (0: any free port)."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """Only this machine can connect (a loopback IP, or the name localhost)."""
        return is_loopback(self.host)

    def url(self, port: int | None = None, token: str | None = None) -> str:
        """The page's URL (with the token in its query when there is one); `port`: the one
        actually bound when this address asked for any (0)."""
        host = self.host
        if host in ("0.0.0.0", "::"):  # all interfaces: name this machine's loopback for the URL
            host = "127.0.0.1" if host == "0.0.0.0" else "::1"
        shown = f"[{host}]" if ":" in host else host
        query = f"?token={quote(token, safe='')}" if token else ""
        return f"http://{shown}:{self.port if port is None else port}/{query}"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_web_address(text: str) -> WebAddress:
    """`PORT`, `HOST:PORT` or `[IPV6]:PORT` as a WebAddress (host 127.0.0.1 when only a port is
    given); UsageError naming the text for a bad port (not 0-65535) or a malformed host."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = DEFAULT_HOST, text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host, version=6):
            raise UsageError(f"--web {text!r}: {host!r} in brackets is not an IPv6 address")
    elif ":" in host:
        raise UsageError(f"--web {text!r}: write an IPv6 address in brackets, as [::1]:8080")
    elif not host:
        raise UsageError(f"--web {text!r}: no host before the ':' (give PORT alone for {DEFAULT_HOST})")
    elif not (_is_ip(host) or (_HOST_NAME.fullmatch(host) and not host.replace(".", "").isdigit())):
        raise UsageError(f"--web {text!r}: {host!r} is neither an IP address nor a host name")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"--web {text!r}: the port must be a number from 0 to 65535 (0: any free port)")
    return WebAddress(host, int(port_text))


def check_token(token: str) -> str:
    """A given access token, checked: at least MIN_TOKEN_CHARS characters, URL-safe ones only."""
    if len(token) < MIN_TOKEN_CHARS:
        raise UsageError(f"the web token must have at least {MIN_TOKEN_CHARS} characters, got {len(token)}")
    if not _TOKEN_CHARS.fullmatch(token):
        raise UsageError("the web token may hold only letters, digits and . _ ~ -")
    return token


def access_token(address: WebAddress, given: str | None) -> str | None:
    """The token requests must carry: `given` (checked) if any; else a new random one when
    `address` is beyond loopback; else None (loopback, no token)."""
    if given:
        return check_token(given)
    return None if address.loopback else secrets.token_urlsafe(24)


def _is_ip(text: str, version: int | None = None) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version
