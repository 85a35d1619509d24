"""Include/exclude filters (pure logic): glob semantics and rclone's first-match order."""

from __future__ import annotations

import os

import pytest

from fastxfer.errors import InvalidConfig, LocalFileError
from fastxfer.filters import Filters, Rule, compile_glob, read_pattern_file


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("*.log", "a.log", True),
        ("*.log", "x/y/a.log", True),  # no "/": the name, at any depth
        ("*.log", "a.log.gz", False),
        ("a?.txt", "ab.txt", True),
        ("a?.txt", "a/.txt", False),  # ? never matches "/"
        ("x/*.txt", "x/a.txt", True),
        ("x/*.txt", "x/y/a.txt", False),  # * stays in one segment
        ("x/**", "x/y/a.txt", True),
        ("x/**", "y/x/a.txt", False),  # with "/": the whole relative path
        ("**/tmp/*", "tmp/a", True),  # **/ may match nothing
        ("**/tmp/*", "a/b/tmp/c", True),
        ("/top.txt", "top.txt", True),
        ("/top.txt", "sub/top.txt", False),  # leading / anchors at the root
        ("cache/", "cache/x", True),
        ("cache/", "a/cache/y/z", True),
        ("cache/", "cache", False),  # a directory pattern matches what is under it
        ("[ab]*.bin", "a1.bin", True),
        ("[!ab]*.bin", "a1.bin", False),
        ("[!ab]*.bin", "c1.bin", True),
        ("a+b(1).txt", "a+b(1).txt", True),  # regex characters are literal
    ],
)
def test_glob_semantics(pattern: str, path: str, matches: bool) -> None:
    assert (compile_glob(pattern).fullmatch(path) is not None) is matches


@pytest.mark.parametrize(
    ("argv", "path", "included"),
    [
        ([], "anything", True),
        (["--exclude", "*.tmp"], "a.tmp", False),
        (["--exclude", "*.tmp"], "a.txt", True),
        # first match wins, in the order given
        (["--include", "keep.tmp", "--exclude", "*.tmp"], "keep.tmp", True),
        (["--exclude", "*.tmp", "--include", "keep.tmp"], "keep.tmp", False),
        # includes only: anything else is excluded
        (["--include", "*.tar"], "b.tar", True),
        (["--include", "*.tar"], "b.zip", False),
        # an exclude among them: unmatched paths are included again
        (["--include", "*.tar", "--exclude", "*.zip"], "b.txt", True),
    ],
)
def test_rule_order(argv: list[str], path: str, included: bool) -> None:
    assert Filters.parse(argv).included(path) is included


def test_exclude_from_file(tmp_path: os.PathLike[str]) -> None:
    p = os.path.join(tmp_path, "ex.txt")
    with open(p, "w", encoding="utf-8") as f:
        f.write("# caches\n*.tmp\n\n  cache/  \n")
    assert read_pattern_file(p) == ["*.tmp", "cache/"]
    f2 = Filters.parse(["--exclude-from", p])
    assert not f2.included("a/b.tmp")
    assert not f2.included("cache/x")
    assert f2.included("keep.txt")
    with pytest.raises(LocalFileError, match="nope"):
        read_pattern_file(os.path.join(tmp_path, "nope"))


@pytest.mark.parametrize("pattern", ["", "   ", "/", "a[b"])
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidConfig):
        Rule("exclude", pattern)
