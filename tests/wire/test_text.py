"""printable(): host-sent text as one line of printable characters that still says it all."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nvmf.wire.text import printable


def _unescape(text: str) -> str:
    return text.encode("latin-1", "backslashreplace").decode("unicode_escape")


@given(st.text())
def test_result_is_one_printable_line_that_decodes_back(text: str) -> None:
    out = printable(text)
    assert out.isprintable()
    assert len(out.splitlines()) <= 1
    assert _unescape(out) == text  # nothing lost, and no two inputs look alike


def test_escapes_are_the_familiar_ones() -> None:
    assert printable("a\nb\r\t\x1b[0m\x7f") == "a\\nb\\r\\t\\x1b[0m\\x7f"
    assert printable("x\u2028y\U000e0001") == "x\\u2028y\\U000e0001"
    assert printable("back\\slash") == "back\\\\slash"


def test_printable_text_is_returned_as_it_is() -> None:
    nqn = "nqn.2014-08.org.nvmexpress:uuid:5a1d0000-0000-4000-8000-000000000001 é 中"
    assert printable(nqn) is nqn
