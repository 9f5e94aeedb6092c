"""Secrets kept out of what the ``nvmf`` command prints.

A DH-HMAC-CHAP secret (``DHHC-1:XX:BASE64:``, ``-S``/``-C``) is never part of a message this
project writes; but argparse quotes an argument it does not know back to the user, and a
mistyped option (``--dhchap-secrt=DHHC-1:…``) would print the secret that follows it.  Every
error line of the CLI goes through :func:`mask_secrets`.
"""

from __future__ import annotations

import re

#: A DH-HMAC-CHAP secret anywhere in a text.
_SECRET_TEXT = re.compile(r"DHHC-1:[^\s:'\"]*:[^\s:'\"]*:?")


def mask_secrets(text: str) -> str:
    """``text`` with every ``DHHC-1:XX:BASE64:`` secret in it masked."""
    return _SECRET_TEXT.sub("DHHC-1:<secret>:", text)
