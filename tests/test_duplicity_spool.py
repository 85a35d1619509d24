"""The duplicity backend's volume spool and prefetcher, driven directly on real servers.

(tests/test_duplicity.py runs them through real duplicity; these pin the limits
and the order that a whole backup cannot show precisely.)
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastxfer import TransferConfig
from fastxfer.blocking import BlockingTransferManager
from fastxfer.coldserver import RealisticMotoServer
from fastxfer.duplicity import spool as spool_module
from fastxfer.duplicity.spool import Prefetcher, SpoolDir, VolumeSpool
from fastxfer.limits import MiB


@pytest.fixture
def spool_dir(work_dir: str) -> Iterator[SpoolDir]:
    d = SpoolDir(lambda: work_dir)
    yield d
    d.remove()


def volume(work_dir: str, name: str, size: int) -> tuple[str, bytes]:
    data = os.urandom(size)
    path = os.path.join(work_dir, name)
    with open(path, "wb") as f:
        f.write(data)
    return path, data


def test_spool_waits_at_its_byte_limit_then_goes_on(
    make_config: Callable[..., TransferConfig],
    bucket: str,
    work_dir: str,
    spool_dir: SpoolDir,
    s3: Any,
) -> None:
    # 2 MiB/s: each 1.5 MiB volume takes ~0.75 s, long enough to see who waits.
    cfg = make_config(bwlimit=2 * MiB)
    with BlockingTransferManager(cfg) as xfer:
        spool = VolumeSpool(xfer, bucket, spool_dir, max_volumes=8, max_bytes=3 * MiB)
        datas: dict[str, bytes] = {}
        uploaded_when_put_returned: list[int] = []
        for i in range(4):
            path, datas[f"v{i}"] = volume(work_dir, f"v{i}", 3 * MiB // 2)
            spool.put(path, f"v{i}", f"dup/v{i}", storage_class=None)
            uploaded_when_put_returned.append(spool.uploaded)
            os.unlink(path)  # duplicity deletes its temp volume once put returns
        # Two volumes (3 MiB) fit; the third put waited for an upload to finish.
        assert spool.peak_volumes == 2
        assert uploaded_when_put_returned[:2] == [0, 0]
        assert uploaded_when_put_returned[2] >= 1
        spool.wait_all()
        assert spool.uploaded == 4
        # One volume larger than the whole limit still goes (alone).
        path, datas["big"] = volume(work_dir, "big", 4 * MiB)
        started = time.monotonic()
        spool.put(path, "big", "dup/big", storage_class=None)
        assert time.monotonic() - started < 1.0  # it did not wait for its own upload
        spool.wait_all()
    for name, data in datas.items():
        assert s3.get_object(Bucket=bucket, Key=f"dup/{name}")["Body"].read() == data
    assert os.listdir(spool_dir.path()) == []  # each spooled file went with its upload


def test_spool_copies_a_volume_it_cannot_hardlink(
    make_config: Callable[..., TransferConfig],
    bucket: str,
    work_dir: str,
    spool_dir: SpoolDir,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    links: list[str] = []

    def cross_device_link(src: str, dst: str) -> None:
        links.append(src)  # the spool on another filesystem than duplicity's temp dir
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)

    monkeypatch.setattr("fastxfer.duplicity.spool.os.link", cross_device_link)
    with BlockingTransferManager(make_config(bwlimit=2 * MiB)) as xfer:
        spool = VolumeSpool(xfer, bucket, spool_dir, max_volumes=8, max_bytes=64 * MiB)
        path, data = volume(work_dir, "v1", 2 * MiB)
        spool.put(path, "v1", "dup/v1", storage_class=None)
        assert links == [path]
        with open(path, "rb") as f:
            assert f.read() == data  # the source is duplicity's: left as it was
        os.unlink(path)  # ...and duplicity removes it while the copy uploads
        spool.wait_all()
    assert s3.get_object(Bucket=bucket, Key="dup/v1")["Body"].read() == data


def test_prefetch_follows_the_read_order_a_window_ahead(
    moto_server: RealisticMotoServer,
    moto_bucket: str,
    moto_config: Callable[..., TransferConfig],
    moto_s3: Any,
    work_dir: str,
    spool_dir: SpoolDir,
) -> None:
    datas = {f"f{i}": os.urandom(1000 + i) for i in range(6)}
    for name, data in datas.items():
        moto_s3.put_object(Bucket=moto_bucket, Key=f"dup/{name}", Body=data)
    order = ["f3", "f1", "f5", "f0", "f2", "f4"]  # duplicity's read order, not key order
    moto_server.reset_counts()
    window = 2
    with BlockingTransferManager(moto_config()) as xfer:
        pre = Prefetcher(xfer, moto_bucket, spool_dir, max_files=window, max_bytes=64 * MiB)
        pre.schedule([(n, f"dup/{n}", len(datas[n]), None) for n in order])
        # duplicity reads its manifest between the batch and the first volume; without
        # that pause the second GET's arrival at the in-process server raced the first
        # take on a loaded machine (one CI failure), not the prefetcher's order.
        time.sleep(0.2)
        taken_at: dict[str, float] = {}
        for name in order:
            future = pre.take(name)
            assert future is not None, name  # every file was fetched ahead of its read
            with open(future.result(timeout=30), "rb") as f:
                assert f.read() == datas[name]
            taken_at[name] = time.monotonic()
        assert pre.started_total == len(order)
    gets = {e.key: e.time for e in moto_server.events("GetObject") if e.key.startswith("dup/")}
    assert sorted(gets) == sorted(f"dup/{n}" for n in order)  # one GET each
    # A file is fetched only once the one `window` places before it was handed over:
    # at most `window` downloads ahead of duplicity's reads, in its order.
    for i in range(window, len(order)):
        assert gets[f"dup/{order[i]}"] > taken_at[order[i - window]] - 0.05, order[i]
    # ...and the first `window` started before anything was taken.
    assert all(gets[f"dup/{n}"] < taken_at[order[0]] for n in order[:window])


def test_spool_failure_is_sticky_for_every_later_put(
    make_config: Callable[..., TransferConfig],
    work_dir: str,
    spool_dir: SpoolDir,
) -> None:
    with BlockingTransferManager(make_config()) as xfer:
        spool = VolumeSpool(xfer, "no-such-bucket-fx", spool_dir, max_volumes=8, max_bytes=64 * MiB)
        path, _ = volume(work_dir, "v1", 1000)
        spool.put(path, "v1", "dup/v1", storage_class=None)
        with pytest.raises(spool_module.VolumeUploadFailed, match="v1"):
            spool.wait_all()
        path2, _ = volume(work_dir, "v2", 1000)
        errors: list[BaseException] = []

        def later_put() -> None:
            try:
                spool.put(path2, "v2", "dup/v2", storage_class=None)
            except spool_module.VolumeUploadFailed as exc:
                errors.append(exc)

        t = threading.Thread(target=later_put)
        t.start()
        t.join(10)
        assert [e.name for e in errors if isinstance(e, spool_module.VolumeUploadFailed)] == ["v1"]
        with pytest.raises(spool_module.VolumeUploadFailed):
            spool.state("v1")
