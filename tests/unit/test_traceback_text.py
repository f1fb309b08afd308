"""errors.traceback_text: the traceback a failed attempt's status record carries (its note)."""

from __future__ import annotations

from streamjobs.errors import traceback_text


def _charge() -> None:
    raise ConnectionError("payment gateway down")


def test_traceback_text_names_the_raising_function_and_ends_with_the_message() -> None:
    try:
        _charge()
    except ConnectionError as exc:
        text = traceback_text(exc)
    assert "in _charge" in text
    assert text.rstrip().endswith("ConnectionError: payment gateway down")


def test_traceback_text_keeps_the_innermost_end_when_cut() -> None:
    try:
        _charge()
    except ConnectionError as exc:
        text = traceback_text(exc, limit=60)
    assert len(text) == 60
    assert text.rstrip().endswith("payment gateway down")
