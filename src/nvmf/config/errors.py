"""The one error type of the configuration layer.

Every problem with a configuration, from a missing file to a port that names an unknown subsystem,
is a :class:`ConfigError` whose message says *where* (the file and the JSON path of the field, as
``subsystems[0].namespaces[1].nsid``) and *what is wrong*, so a person can fix the file without
reading this code.  A ConfigError may carry several problems (the loader reports every bad field
it finds, not only the first); its message then has one line per problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration: the JSON path of the field and what is wrong."""

    path: str
    message: str

    def render(self, source: str) -> str:
        """The problem as one line: ``source: path: message`` (empty parts left out)."""
        return ": ".join(part for part in (source, self.path, self.message) if part)


class ConfigError(ValueError):
    """A configuration that cannot be read, is invalid, or cannot be applied.

    ``source`` names the configuration (its file name), ``problems`` lists every problem found;
    ``str()`` gives one line per problem.
    """

    def __init__(self, source: str, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem("", problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        if not problems:
            raise ValueError("a ConfigError needs at least one problem")
        self.source = source
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(p.render(source) for p in self.problems))

    @classmethod
    def at(cls, source: str, path: str, message: str) -> ConfigError:
        """A ConfigError with one problem at ``path``."""
        return cls(source, Problem(path, message))


def show(value: Any, limit: int = 60) -> str:
    """A value as it appears in JSON (``"x"``, ``7``, ``null``), shortened for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=False)
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: show it escaped, as JSON would
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    except RecursionError:  # JSON nested deeper than Python's stack: say so, briefly
        return "<a value nested too deeply to show>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
