"""Option and argument types that refuse what cannot mean anything, as usage errors (exit 2).

click's own types let some values through that corral would misread: ``FloatRange``
accepts ``nan`` (every comparison with it is false, so ``--wait nan`` waited forever),
``Path`` accepts ``''`` (which Python reads as the current folder) and lets a NUL byte
reach ``os.stat``. Each type here says what it expected and what it got.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from pathlib import Path
from typing import Any

import click

from corral.spec.model import NAME_PATTERN

__all__ = ["ROLE", "Count", "Duration", "Seconds", "SpecFile", "Words"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DECIMAL = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")


class Seconds(click.FloatRange):
    """A finite number of seconds within ``[low, high]``: no nan, no inf."""

    name = "seconds"

    def __init__(self, low: float, high: float) -> None:
        super().__init__(low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        expected = f"expected a number of seconds from {_num(self.min)} to {_num(self.max)}"
        # float() also reads 'nan', 'inf', '1_0' and '١٢'; an option takes plain decimals.
        if not isinstance(value, float) and not _DECIMAL.fullmatch(str(value).strip()):
            self.fail(f"{expected}, got {value!r}", param, ctx)
        number = float(value)
        if not math.isfinite(number) or not self.min <= number <= self.max:  # type: ignore[operator]
            self.fail(f"{expected}, got {value!r}", param, ctx)
        return number


class Duration(Seconds):
    """Seconds, or a number with a unit: ``90``, ``90s``, ``15m``, ``1h``."""

    name = "duration"
    _UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return super().convert(value, param, ctx)
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([smh]?)\s*", str(value))
        if match is None:
            self.fail(f"expected a duration such as 90s, 15m or 1h, got {value!r}", param, ctx)
        seconds = float(match[1]) * self._UNITS[match[2]]
        return super().convert(seconds, param, ctx)


class Count(click.IntRange):
    """A whole number within ``[low, high]``; the message names the bounds."""

    name = "count"

    def __init__(self, low: int, high: int) -> None:
        super().__init__(low, high)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        bounds = f"a whole number from {self.min} to {self.max}"
        text = str(value).strip()
        # int() also reads '١٢' and '1_000'; an option takes plain ASCII digits only.
        if not re.fullmatch(r"[-+]?[0-9]{1,19}", text):
            self.fail(f"expected {bounds}, got {value!r}", param, ctx)
        number = int(text)
        if not self.min <= number <= self.max:  # type: ignore[operator]
            self.fail(f"expected {bounds}, got {value!r}", param, ctx)
        return number


class SpecFile(click.Path):
    """The fleet spec's file name: not empty (that is the current folder), no NUL byte,
    not a folder. Whether it exists and holds a valid spec is the loader's to say."""

    name = "file"

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Path):
            return value
        text = str(value)
        if not text:
            self.fail(
                "expected a file name, got '' (which would mean the current folder)", param, ctx
            )
        if "\x00" in text:
            self.fail(f"a file name cannot hold a NUL byte, got {text!r}", param, ctx)
        return super().convert(text, param, ctx)


class _RoleName(click.types.StringParamType):
    """A role name as the spec allows it (lowercase letters, digits, '-')."""

    name = "role"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if not re.fullmatch(NAME_PATTERN, text):
            self.fail(
                f"expected a role name (lowercase letters, digits and '-', starting with a "
                f"letter), got {text!r}",
                param,
                ctx,
            )
        return text


ROLE = _RoleName()


class _PackageName(click.types.StringParamType):
    """A Debian package name (Debian Policy 5.6.1: lowercase letters, digits, '+', '-', '.';
    at least two characters, starting with a letter or digit)."""

    name = "package"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", text):
            self.fail(f"expected a Debian package name, got {text!r}", param, ctx)
        return text


PACKAGE = _PackageName()


class Words(click.types.StringParamType):
    """One line of printable text of at most ``limit`` characters (a reason, a version)."""

    name = "text"

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        if not text.strip():
            self.fail("expected some text, got nothing", param, ctx)
        if _CONTROL.search(text):
            self.fail(f"expected one line without control characters, got {text!r}", param, ctx)
        if len(text) > self.limit:
            self.fail(f"expected at most {self.limit} characters, got {len(text)}", param, ctx)
        return text


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else str(value)


class WebhookURL(click.types.StringParamType):
    """An http(s) URL to POST alerts to. Its text is never echoed back: a webhook URL
    often carries a token."""

    name = "url"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value)
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname or _CONTROL.search(text):
            self.fail("expected an http:// or https:// URL with a host (not shown)", param, ctx)
        return text
