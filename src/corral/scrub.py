"""The one scrubber for everything corral writes down or prints.

Two kinds of secret are removed, wherever the text comes from (build logs, test output
and the log excerpts of test records, error messages, the audit trail's details,
``--json`` output):

- **the values of the fleet's secrets**: every value of a name in some role's
  ``run.secrets`` that is set in corral's environment, wherever it appears in a text,
  also as JSON writes it (escaped), becomes ``***``. Values shorter than
  :data:`MIN_VALUE_CHARS` are left alone: replacing every ``1`` of a log would hide
  everything and protect nothing;
- **what looks like an assignment of a secret**: a word containing ``password``,
  ``secret``, ``token`` or ``key`` (any case) followed by ``=`` or ``:`` and a value
  becomes ``<word>=***`` (``DB_PASSWORD=hunter2`` -> ``DB_PASSWORD=***``), line by line;
  and in data, the value of every key that looks secret (containing ``password``,
  ``passwd``, ``secret``, ``token`` or ``key``) becomes ``***``, at any depth.

Text printed to a terminal gets only the first kind (:meth:`Scrubber.values`): corral's
own human output has words like "key:" that are not secrets. What is stored (state,
audit) gets both (:meth:`Scrubber.text`, :meth:`Scrubber.data`).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

SCRUBBED = "***"
#: Secret values shorter than this are not searched for in texts.
MIN_VALUE_CHARS = 4

_SECRET_KEY = re.compile(r"password|passwd|secret|token|key", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(r"(?i)(password|secret|token|key)\s*[=:]\s*\S+")


def looks_secret(key: str) -> bool:
    """Whether a key (of details, checks, env...) names something that must not be kept."""
    return bool(_SECRET_KEY.search(key))


def scrub_assignments(text: str) -> str:
    """``text`` with ``password=...``, ``token: ...`` and the like replaced, line by line."""
    return "\n".join(_SECRET_ASSIGNMENT.sub(rf"\1={SCRUBBED}", line) for line in text.split("\n"))


@dataclass(frozen=True)
class Scrubber:
    """Removes secrets from texts and data; see the module docstring for what it removes.

    ``secrets`` are the texts to remove wherever they appear, longest first (so a value
    that contains another is removed whole). Make one with :meth:`of` or
    :meth:`from_environ`; ``Scrubber()`` removes only what looks secret.
    """

    secrets: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never the values, in a traceback or a log
        return f"Scrubber({len(self.secrets)} values)"

    @classmethod
    def of(cls, values: Iterable[str]) -> Scrubber:
        """A scrubber of ``values``, each also as JSON escapes it and without the blanks
        around it (a value with a trailing newline is printed without it)."""
        forms: set[str] = set()
        for value in values:
            for form in (value, value.strip()):
                forms |= {form, json.dumps(form)[1:-1], json.dumps(form, ensure_ascii=False)[1:-1]}
        kept = {form for form in forms if len(form) >= MIN_VALUE_CHARS}
        return cls(tuple(sorted(kept, key=lambda f: (-len(f), f))))

    @classmethod
    def from_environ(
        cls, names: Iterable[str], environ: Mapping[str, str] | None = None
    ) -> Scrubber:
        """A scrubber of the values ``names`` have in corral's environment (those set)."""
        env = os.environ if environ is None else environ
        return cls.of(env[name] for name in set(names) if name in env)

    def including(self, values: Iterable[str]) -> Scrubber:
        """This scrubber, also removing ``values``."""
        return Scrubber.of([*self.secrets, *values])

    def values(self, text: str) -> str:
        """``text`` with every secret value replaced by ``***``."""
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, SCRUBBED)
        return text

    def text(self, text: str) -> str:
        """``text`` without secret values and without what looks like a secret's assignment."""
        return scrub_assignments(self.values(text))

    def data(self, value: Any) -> Any:
        """A copy of JSON-like ``value``: secret-looking keys' values are ``***``, every
        text (keys too) is scrubbed with :meth:`text`; tuples become lists."""
        if isinstance(value, Mapping):
            return {
                self.values(str(k)): SCRUBBED if looks_secret(str(k)) else self.data(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        if isinstance(value, str):
            return self.text(value)
        return value


class ScrubbedStream(io.TextIOBase, TextIO):
    """A text stream that writes through to ``stream`` with secret values removed.

    corral's console output goes through one: whatever a view, a progress line or an
    error message holds, a value of the fleet's secrets never reaches the terminal.
    """

    def __init__(self, stream: TextIO, scrubber: Scrubber) -> None:
        self._stream = stream
        self._scrubber = scrubber

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._stream.write(self._scrubber.values(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # read-only here, as on sys.stdout
        return str(getattr(self._stream, "encoding", None) or "utf-8")
