"""Text a peer sent, made safe to print (issue 8: a host NQN must not forge log lines).

NQNs and other strings in Connect data are UTF-8 chosen by whoever connects.  A newline in one
would end the target's log line and start a forged one; an escape sequence would rewrite the
operator's terminal.  Every log call that formats such a string passes it through
:func:`printable` first.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with each character that is not printable escaped the way ``repr`` spells it
    (``\\n``, ``\\x1b``, ``\\u2028``) and each backslash doubled, so that the result is one line
    of printable characters and still says exactly what the peer sent.  Printable text is
    returned as it is (the common case costs one check)."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_escape(ch) for ch in text)


_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"
