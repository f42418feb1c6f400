"""agent.logsafe: peer text escaped for logs, cleaned for reports."""

import pytest

from agent.logsafe import clean, escape, loggable_path


@pytest.mark.parametrize(
    ("value", "escaped"),
    [
        ("NetStream.Publish.BadName", "NetStream.Publish.BadName"),
        ("a\r\nb", "a\\r\\nb"),
        ("nul\x00bell\x07del\x7f", "nul\\x00bell\\x07del\\x7f"),
        ("esc\x1b[2J", "esc\\x1b[2J"),
        ("c1\x85 sep\u2028\u2029", "c1\\x85 sep\\u2028\\u2029"),
        ("rtl\u202e", "rtl\\u202e"),
        ("back\\slash", "back\\\\slash"),  # a forged "\\n" cannot pass for an escape
        ("tab\there", "tab\\there"),
        ("naïve ünïcode ✓", "naïve ünïcode ✓"),
        ("\ud800", "\\ud800"),
        (12, "12"),
    ],
)
def test_escape(value, escaped):
    assert escape(value) == escaped


def test_escape_cuts_long_text_and_says_how_much():
    text = escape("x" * 100_000 + "\n", limit=10)
    assert text == "xxxxxxxxxx…(99991 more)"
    assert "\n" not in escape("\n" * 500)
    assert len(escape("\n" * 500)) < 2 * 200 + 20


def test_clean_removes_what_cannot_be_shown_and_cuts():
    assert clean("Connection refused") == "Connection refused"
    assert clean("a\r\nb\x00c\x1b[2J\u2028") == "abc[2J"
    assert clean("y" * 1000) == "y" * 200
    assert clean(("\x00" * 5 + "z") * 10_000) == "z" * 200
    assert clean(None) is None
    assert clean(5) == 5


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("live", "live"),
        ("live2/backup", "live2/backup"),
        ("live/rIiroI8xC1tcjT28ulZWhQ", "live/<22 characters>"),  # a stream key
        ("rIiroI8xC1tcjT28ulZWhQ", "<22 characters>"),
        ("live/abcd-efgh-ijkl-mnop-qrst", "live/<24 characters>"),  # a YouTube key
        ("li\r\nve", "li\\r\\nve"),
        ("x\x00/y", "x\\x00/y"),
    ],
)
def test_loggable_path_withholds_what_may_be_a_key(path, logged):
    assert loggable_path(path) == logged


def test_loggable_path_shows_a_few_segments():
    assert loggable_path("a/" * 100) == "a/a/a/a/a/a/a/a/…(93 more segments)"
