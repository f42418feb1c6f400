"""Peer-supplied text made safe: escaped for logs, cleaned for reports.

Anything a publisher or a destination sends (an RTMP application name, an onStatus code
or description, a command name inside a protocol error) may hold newlines that forge log
lines, NUL bytes, terminal escapes, or megabytes. Three helpers, one per use:

- `escape(value)`: for a log line. Every control character (C0, DEL, C1, and the Unicode
  line and paragraph separators) becomes a visible escape (`\\n`, `\\x00`, `\\u2028`),
  a backslash is doubled so an escape cannot be faked, and the result is cut to `limit`
  characters with a marker. The text stays readable and nothing is lost silently.
- `loggable_path(path)`: an application name for a log line: escaped, and any segment
  long enough to be a stream key withheld (a key pasted into the server URL).
- `clean(value)`: for a report that a person reads elsewhere (the heartbeat's health,
  shown in stats and webhooks): control characters removed, at most `limit` characters
  (docs/agent-protocol.md#heartbeat-health).

Every log line of the agent that carries a peer's text goes through `escape`.
"""

from __future__ import annotations

import itertools

#: Longest peer-supplied text kept, in a log line or a report
#: (docs/agent-protocol.md#heartbeat-health).
LIMIT = 200

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _unsafe(char: str) -> bool:
    code = ord(char)
    # C0 controls, DEL, C1 controls, LINE/PARAGRAPH SEPARATOR (some viewers break lines
    # on them), and the other characters Python does not call printable (format
    # characters such as right-to-left overrides, unpaired surrogates).
    return code < 0x20 or 0x7F <= code < 0xA0 or not char.isprintable()


def _escaped_char(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(value: object, limit: int = LIMIT) -> str:
    """`value` as text fit for one log line: control characters escaped, at most
    `limit` characters of the original, then `…(N more)` if it was longer."""
    text = value if isinstance(value, str) else str(value)
    more = len(text) - limit
    if more > 0:
        text = text[:limit]
    if text.isprintable() and "\\" not in text:
        escaped = text  # the common case: nothing to do
    else:
        escaped = "".join(_escaped_char(c) if c == "\\" or _unsafe(c) else c for c in text)
    return f"{escaped}…({more} more)" if more > 0 else escaped


#: A path segment this long may be a key (ours are 22 characters, a YouTube key 24).
KEY_LIKE = 16


def loggable_path(path: str) -> str:
    """An RTMP application (or any "/" path a peer sent) fit for a log line: escaped, and
    every segment long enough to be a key withheld (`<22 characters>`). A streamer who
    pastes the key into OBS's server URL as well publishes to "live/KEY"; the log says
    what was wrong without the key."""
    parts = path.split("/")
    shown = "/".join(
        f"<{len(part)} characters>" if len(part) >= KEY_LIKE else escape(part) for part in parts[:8]
    )
    return shown + f"/…({len(parts) - 8} more segments)" if len(parts) > 8 else shown


def clean(value: object, limit: int = LIMIT) -> object:
    """A string that may hold a peer's bytes, fit for a report: control and other
    unprintable characters removed, at most `limit` characters. Non-strings unchanged."""
    if not isinstance(value, str):
        return value
    if not value.isprintable():
        value = value.translate(_CONTROLS)  # the usual ones, at C speed
        if not value.isprintable():  # the rarer rest, up to `limit` characters kept
            value = "".join(itertools.islice((c for c in value if c.isprintable()), limit))
    return value[:limit]


# C0 controls, DEL, C1 controls, LINE and PARAGRAPH SEPARATOR: removed by `clean`.
_CONTROLS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029])
