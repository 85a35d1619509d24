"""Include/exclude filters for ``cp -r`` and ``sync``, with rclone's ordering.

Rules are tried in the order given; the **first** rule that matches a path
decides.  A path no rule matches is included, unless only ``--include``
rules were given: then it is excluded (``--include '*.tar'`` alone copies
just the tar files).  Paths are relative to the source root and use ``/``.

Patterns are globs:

* ``*`` matches within one path segment, ``**`` across segments, ``?`` one
  character, ``[abc]`` / ``[!abc]`` a class;
* a pattern without ``/`` matches the file name at any depth
  (``*.log`` matches ``a.log`` and ``x/y/a.log``);
* a pattern with ``/`` matches the whole relative path; a leading ``/``
  anchors it at the root (``/tmp/**`` is the top-level ``tmp`` only);
* a pattern ending with ``/`` matches a directory and everything under it
  (``cache/`` matches ``cache/x`` and ``a/cache/y``).

Example::

    f = Filters.parse(["--exclude", "*.tmp", "--include", "*"])  # order kept
    f = Filters([Rule("exclude", "*.tmp"), Rule("include", "photos/**")])
    f.included("x/a.tmp")  # False
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fastxfer.errors import InvalidConfig, LocalFileError

Action = Literal["include", "exclude"]


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``--include`` / ``--exclude`` pattern (see the module docstring)."""

    action: Action
    pattern: str
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.action not in ("include", "exclude"):
            raise InvalidConfig(f"invalid filter action {self.action!r}")
        if not self.pattern.strip():
            raise InvalidConfig(f"empty --{self.action} pattern", hint="e.g. '*.tmp' or 'cache/'")
        object.__setattr__(self, "_regex", compile_glob(self.pattern))

    def matches(self, path: str) -> bool:
        return self._regex.fullmatch(path) is not None


def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression for a filter pattern (see the module docstring)."""
    anchored = pattern.startswith("/")
    body = pattern.lstrip("/")
    directory = body.endswith("/")
    body = body.rstrip("/")
    if not body:
        raise InvalidConfig(f"invalid filter pattern {pattern!r}", hint="e.g. '*.tmp' or 'cache/'")
    rx = _translate(body, pattern)
    if directory:
        rx += "/.*"
    if anchored:
        return re.compile(rx, re.DOTALL)
    if "/" in body:
        # Relative to the root, but a leading "**/" may also match nothing.
        return re.compile(rx, re.DOTALL)
    # A bare name (or dir/): at any depth.
    return re.compile(f"(?:.*/)?{rx}", re.DOTALL)


def _translate(glob: str, original: str) -> str:
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if c == "*":
            if glob.startswith("**", i):
                i += 2
                if glob.startswith("/", i):  # "**/" : zero or more whole segments
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = glob.find("]", i + 2 if glob.startswith("[!", i) else i + 1)
            if j < 0:
                raise InvalidConfig(
                    f"invalid filter pattern {original!r}: '[' without ']'",
                    hint="escape a literal bracket as [[]",
                )
            inner = glob[i + 1 : j]
            if inner.startswith("!"):
                inner = "^" + inner[1:]
            out.append(f"[{inner.replace(chr(92), chr(92) * 2)}]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


class Filters:
    """An ordered list of rules; :meth:`included` decides a relative path."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        self._default = not (self.rules and all(r.action == "include" for r in self.rules))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def included(self, path: str) -> bool:
        """Whether ``path`` (relative, ``/``-separated) passes the filters."""
        for rule in self.rules:
            if rule.matches(path):
                return rule.action == "include"
        return self._default

    @classmethod
    def parse(cls, argv: Sequence[str]) -> Filters:
        """From ``["--exclude", P, "--include", Q, "--exclude-from", FILE, ...]`` in order."""
        rules: list[Rule] = []
        it = iter(argv)
        for flag in it:
            value = next(it, None)
            if value is None:
                raise InvalidConfig(f"{flag} needs a value")
            if flag == "--include":
                rules.append(Rule("include", value))
            elif flag == "--exclude":
                rules.append(Rule("exclude", value))
            elif flag == "--exclude-from":
                rules.extend(Rule("exclude", p) for p in read_pattern_file(value))
            else:
                raise InvalidConfig(f"unknown filter option {flag!r}")
        return cls(rules)


def read_pattern_file(path: str) -> list[str]:
    """Patterns from a file, one a line; blank lines and ``#`` comments skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise LocalFileError(f"{path}: {exc.strerror or exc}") from exc
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
