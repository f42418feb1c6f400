"""Destination services and their RTMP ingest base URLs.

A destination's full ingest URL is the service's base URL, a slash and the
destination's stream key. Operators override a built-in service's base URL with
RIG_SERVICE_URL_<UPPER-CASED SERVICE NAME> (regional ingest servers, or a local
receiver in tests). `Custom` destinations bring their own server URL.
"""

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

CUSTOM = "Custom"

# Service names are case-sensitive in the API (spec: "Services (case-sensitive)").
# Sources: each service's own streaming documentation / stream-settings page.
DEFAULT_SERVICE_URLS: dict[str, str] = {
    "YouTube": "rtmp://a.rtmp.youtube.com/live2",
    "Twitch": "rtmp://live.twitch.tv/app",
    "Facebook": "rtmps://live-api-s.facebook.com:443/rtmp",
    "Kick": "rtmps://fa723fc1b171.global-contribute.live-video.net/app",
}

MAX_URL_LENGTH = 512
_HOST = re.compile(r"^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$")


def service_urls_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return the base URL of every built-in service, with RIG_SERVICE_URL_* overrides."""
    urls = dict(DEFAULT_SERVICE_URLS)
    for service in urls:
        var = f"RIG_SERVICE_URL_{service.upper()}"
        if override := env.get(var):
            try:
                urls[service] = rtmp_server_url(override.rstrip("/"))
            except ValueError as exc:
                raise ValueError(f"{var}: {exc}") from None
    return urls


def ingest_url(base_url: str, stream_key: str) -> str:
    """The full URL a destination is pushed to: base URL plus the destination key."""
    return f"{base_url}/{stream_key}"


def rtmp_server_url_problem(url: str) -> str | None:
    """Why `url` is not a usable RTMP server URL (None if it is).

    Accepted: `rtmp://` or `rtmps://`, a host name or address, an optional port, and an
    application path (`rtmp://host[:port]/app[/instance]`), no spaces or control
    characters, at most 512 characters. The destination's key is appended to it.
    """
    if len(url) > MAX_URL_LENGTH:
        return f"at most {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "no spaces or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("rtmp", "rtmps"):
        return "scheme must be rtmp:// or rtmps://"
    host = parts.netloc.rpartition("@")[2]
    if "@" in parts.netloc:
        return "no user information in the URL"
    host = host.rsplit(":", 1)[0] if port is not None else host
    if not host or not _HOST.match(host):
        return "a host name or address is required"
    if not parts.path.strip("/"):
        return "an application path is required, e.g. rtmp://host/live"
    if parts.query or parts.fragment:
        return "no query or fragment (put them in the stream key)"
    return None


def rtmp_server_url(url: str) -> str:
    """An RTMP server URL setting (an option type): ValueError says what is wrong."""
    if problem := rtmp_server_url_problem(url):
        raise ValueError(f"must be rtmp[s]://host[:port]/app ({problem}), not {url!r}")
    return url


def parse_ingest_urls(text: str) -> list[str]:
    """RIG_INGEST_URLS: comma-separated RTMP server URLs; ValueError names a bad one."""
    urls = [url.strip().rstrip("/") for url in text.split(",") if url.strip()]
    for url in urls:
        if problem := rtmp_server_url_problem(url):
            raise ValueError(f"ingest URL {url!r}: {problem}")
    return urls


def ingest_urls_setting(text: str) -> str:
    """RIG_INGEST_URLS as an option type: validated, kept as given."""
    parse_ingest_urls(text)
    return text
