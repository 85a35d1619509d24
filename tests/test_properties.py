"""Property tests (hypothesis): part planning, range splitting, and where keys land.

Pure functions, so thousands of cases cost well under a second each; no
example database is written (``database=None``) and no per-example deadline
applies (a loaded CI machine must not turn slowness into failures).
"""

from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from fastxfer import InvalidConfig, LocalFileError, TransferConfig, integrity
from fastxfer.limits import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, GiB, MiB
from fastxfer.localpath import MAX_NAME_BYTES, key_path_problem, local_path_for_key, map_keys
from fastxfer.planning import download_get_count, fit_part_size, range_size, upload_part_size

# Hypothesis keeps a cache (.hypothesis/) in the working directory: not in the checkout.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "fastxfer-hypothesis"))
settings.register_profile(
    "fastxfer",
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("fastxfer")

# Sizes biased towards the edges: empty, tiny, around part and part-count limits, 5 TiB.
_edges = [
    0,
    1,
    MIN_PART_SIZE - 1,
    MIN_PART_SIZE,
    MIN_PART_SIZE + 1,
    16 * MiB,
    MAX_PARTS * MIN_PART_SIZE,
    MAX_PARTS * MIN_PART_SIZE + 1,
    MAX_PARTS * 16 * MiB,
    MAX_PARTS * 16 * MiB + 1,
    MAX_PART_SIZE,
    MAX_OBJECT_SIZE - 1,
    MAX_OBJECT_SIZE,
]
sizes = st.one_of(
    st.sampled_from(_edges),
    st.integers(min_value=0, max_value=MAX_OBJECT_SIZE),
    st.integers(min_value=0, max_value=64 * GiB),
)
part_sizes = st.one_of(
    st.sampled_from([1, MIN_PART_SIZE, 8 * MiB, 16 * MiB, 64 * MiB, MAX_PART_SIZE]),
    st.integers(min_value=1, max_value=MAX_PART_SIZE),
)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- part planning -----------------------------------------------------------------


@given(size=sizes, preferred=part_sizes)
def test_fit_part_size_fits_s3_limits_and_covers_the_object(size: int, preferred: int) -> None:
    part = fit_part_size(size, preferred)
    assert MIN_PART_SIZE <= part <= MAX_PART_SIZE
    assert ceil_div(size, part) <= MAX_PARTS  # at most 10,000 parts...
    assert part * MAX_PARTS >= size  # ...that cover every byte
    assert part >= min(max(preferred, MIN_PART_SIZE), MAX_PART_SIZE)  # never below the ask


@given(size=sizes, preferred=part_sizes)
def test_fit_part_size_raises_the_part_only_as_far_as_needed(size: int, preferred: int) -> None:
    """Raised above the preferred size only to fit 10,000 parts, then by whole MiB:
    a part one MiB smaller would need more than 10,000."""
    part = fit_part_size(size, preferred)
    floor = max(preferred, MIN_PART_SIZE)
    if part > floor:
        assert part % MiB == 0
        assert ceil_div(size, part - MiB) > MAX_PARTS or part - MiB < floor


@given(size=st.integers(min_value=MAX_OBJECT_SIZE + 1, max_value=2 * MAX_OBJECT_SIZE))
def test_fit_part_size_refuses_objects_s3_cannot_store(size: int) -> None:
    with pytest.raises(InvalidConfig, match="5 TiB"):
        fit_part_size(size, 16 * MiB)


# -- range splitting -----------------------------------------------------------------


@st.composite
def configs(draw: st.DrawFn) -> TransferConfig:
    part = draw(st.integers(min_value=MIN_PART_SIZE, max_value=MAX_PART_SIZE))
    download_part = draw(
        st.one_of(st.none(), st.integers(min_value=MIN_PART_SIZE, max_value=MAX_PART_SIZE))
    )
    return TransferConfig(
        endpoint_url="http://127.0.0.1:1",
        max_concurrency=draw(st.integers(min_value=1, max_value=1024)),
        part_size=part,
        download_part_size=download_part,
        multipart_threshold=draw(
            st.one_of(st.just(16 * MiB), st.integers(min_value=1, max_value=8 * GiB))
        ),
        memory_limit=max(512 * MiB, part),
    )


def planned_ranges(size: int, cfg: TransferConfig, connections: int) -> list[tuple[int, int]]:
    """[start, end) of each GET as the download makes them (download._fetch_all)."""
    if size == 0:
        return [(0, 0)]
    part = range_size(size, cfg, connections) if size >= cfg.multipart_threshold else size
    return [(start, min(size, start + part)) for start in range(0, size, part)]


@given(size=sizes, cfg=configs(), share=st.floats(min_value=0.0, max_value=1.0))
def test_range_plan_covers_every_byte_once_and_agrees_with_the_get_count(
    size: int, cfg: TransferConfig, share: float
) -> None:
    # The connections allowed when the download starts: 1 to the whole budget.
    connections = max(1, round(cfg.max_concurrency * share))
    count = download_get_count(size, cfg, connections)
    # The estimate (at the whole budget) is the most a download makes.
    assert count <= download_get_count(size, cfg)
    if connections == cfg.max_concurrency:
        assert count == download_get_count(size, cfg)
    if size >= cfg.multipart_threshold and size > 0:
        part = range_size(size, cfg, connections)
        assert MIN_PART_SIZE <= part <= MAX_PART_SIZE
        assert count == ceil_div(size, part) <= MAX_PARTS
        assert part * count >= size > part * (count - 1)  # covered, no empty range
        if cfg.download_part_size is None:
            assert part >= MIN_PART_SIZE
            # Enough ranges to keep every connection busy, no more, unless ranges
            # would grow past 64 MiB.
            assert count <= max(connections, ceil_div(size, 64 * MiB))
    else:
        assert count == 1
    # download_get_count is what a download does (its ranges).
    ranges = planned_ranges(size, cfg, connections)
    assert len(ranges) == count
    position = 0
    for start, end in ranges:
        assert start == position
        assert end > start or size == 0
        position = end
    assert position == size


# -- where a key lands -----------------------------------------------------------------

# Keys from the characters that matter: separators, dots, NUL, a backslash,
# non-ASCII; plus any text.
_key_chars = st.sampled_from(["/", ".", "..", "a", "b", "\\", "\0", " ", "é", "名", "~", "-"])
keys = st.one_of(
    st.lists(_key_chars, min_size=0, max_size=12).map("".join),
    st.text(max_size=40),
    st.lists(
        st.sampled_from(["", ".", "..", "a", "B", "x y", "a" * MAX_NAME_BYTES]), max_size=5
    ).map("/".join),
)
prefixes = st.sampled_from(["", "p/", "p", "a/", "../", "/"])
ROOT = os.path.join(os.sep, "restore", "root")


def _inside(root: str, path: str) -> bool:
    norm = os.path.normpath(path)
    return norm != root and os.path.commonpath([root, norm]) == root


@given(key=keys, prefix=prefixes)
def test_a_key_never_lands_outside_the_root(key: str, prefix: str) -> None:
    try:
        path = local_path_for_key(ROOT, key, prefix)
    except LocalFileError:
        assert key_path_problem(key, prefix) is not None
        return
    assert key_path_problem(key, prefix) is None
    assert _inside(ROOT, path)
    # Kept exactly: no segment normalised away, none added.
    assert os.path.normpath(path) == path
    assert os.path.relpath(path, ROOT).split(os.sep) == key[len(prefix) :].split("/")
    assert "\0" not in path


@st.composite
def key_pairs(draw: st.DrawFn) -> tuple[str, str]:
    """Two keys: unrelated, or the second a near-twin of the first that a file
    system could fold into the same path (a doubled or a leading or trailing
    slash, a ``./`` or ``x/../`` inserted, a case change)."""
    a = draw(keys)
    twins = [
        a.replace("/", "//", 1),
        "/" + a,
        a + "/",
        a.replace("/", "/./", 1),
        a.replace("/", "/x/../", 1),
        "./" + a,
        a.upper(),
        a.lstrip("/"),
    ]
    b = draw(st.one_of(keys, st.sampled_from(twins)))
    return a, b


def same_file(p: str, q: str) -> bool:
    return os.path.normcase(os.path.normpath(p)) == os.path.normcase(os.path.normpath(q))


@given(pair=key_pairs(), prefix=prefixes)
def test_distinct_keys_map_to_distinct_paths_or_are_refused(
    pair: tuple[str, str], prefix: str
) -> None:
    a, b = pair
    assume(a != b)
    try:
        pa = local_path_for_key(ROOT, a, prefix)
        pb = local_path_for_key(ROOT, b, prefix)
    except LocalFileError:
        return
    # (Case: on a file system that ignores it, map_keys reports the second key.)
    assert not same_file(pa, pb) or os.path.normcase(a) == os.path.normcase(b)


@given(listing=st.lists(keys, max_size=12), prefix=prefixes)
def test_a_listing_maps_to_distinct_files_none_inside_another(
    listing: list[str], prefix: str
) -> None:
    """map_keys: every key is either saved or reported (once), the saved ones are
    distinct files under the root, and none is the folder of another."""
    mapped, unmapped = map_keys(ROOT, listing, prefix)
    assert sorted([k for k, _ in mapped] + [u.key for u in unmapped]) == sorted(listing)
    assert all(u.reason for u in unmapped)
    paths = [os.path.normcase(os.path.normpath(p)) for _, p in mapped]
    assert len(set(paths)) == len(paths)
    assert all(_inside(ROOT, p) for p in paths)
    as_dirs = {p + os.sep for p in paths}
    assert not any(q.startswith(d) for q in paths for d in as_dirs)
    for key, path in mapped:
        assert path == local_path_for_key(ROOT, key, prefix)


@given(size=sizes, cfg=configs(), share=st.floats(min_value=0.0, max_value=1.0))
def test_upload_parts_fill_the_connections_within_part_size(
    size: int, cfg: TransferConfig, share: float
) -> None:
    """upload_part_size: within S3's limits, never above what ``part_size`` alone
    gives, and below it only as far as needed for as many parts as connections
    (the smallest whole MiB that does), or at the 5 MiB floor."""
    connections = max(1, round(cfg.max_concurrency * share))
    part = upload_part_size(size, cfg, connections)
    plain = fit_part_size(size, cfg.part_size)
    parts = ceil_div(size, part)
    assert MIN_PART_SIZE <= part <= plain
    assert parts <= MAX_PARTS
    if MIN_PART_SIZE < part < plain:
        assert part % MiB == 0
        assert parts <= connections < ceil_div(size, part - MiB)
    if part == plain and size > 0:
        # Not shrunk: part_size already makes as many parts as connections.
        assert (
            ceil_div(size, plain) >= connections
            or plain == MIN_PART_SIZE
            or (ceil_div(ceil_div(size, connections), MiB) * MiB >= plain)
        )
    assert upload_part_size(size, cfg) == upload_part_size(size, cfg, cfg.max_concurrency)


@given(size=st.integers(0, 5 * GiB), workers=st.integers(1, 8))
def test_crc_spans_cover_the_file_in_order_page_aligned(size: int, workers: int) -> None:
    """integrity.spans: the pieces of a parallel whole-file CRC cover [0, size) in
    order without overlap, each starts on a 32 MiB window (mmap needs page
    alignment), there are at most ``workers`` and none under 64 MiB but the last."""
    pieces = integrity.spans(size, workers)
    assert 1 <= len(pieces) <= workers
    pos = 0
    for start, length in pieces:
        assert start == pos
        assert start % (32 * MiB) == 0
        pos += length
    assert pos == size
    assert all(n >= 64 * MiB for _, n in pieces[:-1])
    assert all(n > 0 for _, n in pieces) or pieces == [(0, 0)]


@pytest.mark.parametrize(("workers", "pieces"), [(1, 1), (2, 2), (4, 2)])
async def test_parallel_file_crc_equals_one_pass(
    tmp_path: os.PathLike[str], workers: int, pieces: int
) -> None:
    """The whole-file CRC computed in pieces by threads and combined is the CRC of
    the bytes in one pass (a 161 MiB + 1 byte file: two pieces of 96 MiB and
    65 MiB + 1 byte from 2 workers up, the last not a whole window)."""
    data = os.urandom(161 * MiB + 1)
    path = os.path.join(str(tmp_path), "f")
    with open(path, "wb") as f:
        f.write(data)
    assert len(integrity.spans(len(data), workers)) == pieces
    crc, size = await integrity.file_crc64nvme_parallel(path, workers)
    assert size == len(data)
    assert crc == integrity.crc64nvme(data) == integrity.file_crc64nvme(path)[0]
