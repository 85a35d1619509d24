"""The progress bar's connection column: the tuned count and, for downloads, the
cap on ranged GETs while one applies (pure formatting; the values come from a
real manager in test_tuning)."""

from __future__ import annotations

from fastxfer.cli.progress import ProgressBar


def test_the_bar_shows_the_count_and_a_range_cap_only_while_there_is_one() -> None:
    cap: list[int | None] = [2]
    bar = ProgressBar("download", 100, 1, connections=lambda: 8, ranges=lambda: cap[0])
    assert bar._conns_text() == "8 conn, 2 ranges"
    cap[0] = None  # lifted: the count governs
    assert bar._conns_text() == "8 conn"
    upload = ProgressBar("upload", 100, 1, connections=lambda: 16)
    assert upload._conns_text() == "16 conn"
    assert ProgressBar("upload", 100, 1)._conns_text() == ""
