"""Destination services and their RTMP ingest base URLs.

A destination's full ingest URL is the service's base URL, a slash and the
destination's stream key. Operators override a base URL per service with
RIG_SERVICE_URL_<UPPER-CASED SERVICE NAME> (regional ingest servers, or a local
receiver in tests).
"""

from collections.abc import Mapping

# Service names are case-sensitive in the API (spec: "Services (case-sensitive)").
DEFAULT_SERVICE_URLS: dict[str, str] = {
    "YouTube": "rtmp://a.rtmp.youtube.com/live2",
    "Twitch": "rtmp://live.twitch.tv/app",
}


def service_urls_from_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return the base URL of every known service, with RIG_SERVICE_URL_* overrides."""
    urls = dict(DEFAULT_SERVICE_URLS)
    for service in urls:
        override = env.get(f"RIG_SERVICE_URL_{service.upper()}")
        if override:
            urls[service] = override.rstrip("/")
    return urls


def ingest_url(base_url: str, stream_key: str) -> str:
    """The full URL a destination is pushed to: base URL plus the destination key."""
    return f"{base_url}/{stream_key}"
