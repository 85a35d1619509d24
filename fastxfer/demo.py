"""``fastxfer demo``: a round trip through an embedded S3 server, for newcomers."""

from __future__ import annotations

import filecmp
import json
import os
import sys
import tempfile
import time
from typing import Any

from fastxfer.units import format_rate, format_size


def _tmp_root() -> str:
    # tmpfs when there is one, so the demo measures fastxfer rather than the disk.
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def run_demo(*, total: int, files: int, concurrency: int, progress: bool, as_json: bool) -> int:
    from fastxfer.cli import main as cli_main
    from fastxfer.localserver import LocalS3Server

    files = max(1, files)
    out = sys.stderr
    with tempfile.TemporaryDirectory(prefix="fastxfer-demo-", dir=_tmp_root()) as work:
        src = os.path.join(work, "src")
        dst = os.path.join(work, "dst")
        os.makedirs(src)
        # One big file (multipart, concurrent parts) and several smaller ones.
        big = total // 2 if files > 1 else total
        sizes = [big] + [(total - big) // (files - 1)] * (files - 1) if files > 1 else [big]
        for i, size in enumerate(sizes):
            name = "big file.bin" if i == 0 else f"part-{i:02d}-é.bin"
            with open(os.path.join(src, name), "wb") as f:
                left = size
                while left:
                    n = min(left, 8 << 20)
                    f.write(os.urandom(n))
                    left -= n
        with LocalS3Server(root=os.path.join(work, "s3")) as srv:
            bucket = srv.make_bucket("demo")
            env = {
                "AWS_ACCESS_KEY_ID": srv.access_key,
                "AWS_SECRET_ACCESS_KEY": srv.secret_key,
            }
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                print(
                    f"embedded S3 server (rclone serve s3) on {srv.endpoint_url}; "
                    f"{files} files, {format_size(sum(sizes))}",
                    file=out,
                )
                common = ["--endpoint-url", srv.endpoint_url, "--concurrency", str(concurrency)]
                if not progress:
                    common.append("--no-progress")
                t0 = time.monotonic()
                rc = cli_main(["cp", "-r", src, f"s3://{bucket}/backup/", *common])
                t_up = time.monotonic() - t0
                if rc:
                    return rc
                t0 = time.monotonic()
                rc = cli_main(["cp", "-r", f"s3://{bucket}/backup/", dst, *common])
                t_down = time.monotonic() - t0
                if rc:
                    return rc
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        cmp = filecmp.dircmp(src, dst)
        same = not (cmp.left_only or cmp.right_only or cmp.diff_files or cmp.funny_files)
        same = same and all(
            filecmp.cmp(os.path.join(src, n), os.path.join(dst, n), shallow=False)
            for n in os.listdir(src)
        )
        nbytes = sum(sizes)
        result: dict[str, Any] = {
            "files": files,
            "bytes": nbytes,
            "upload_seconds": round(t_up, 3),
            "download_seconds": round(t_down, 3),
            "upload_bytes_per_second": round(nbytes / t_up),
            "download_bytes_per_second": round(nbytes / t_down),
            "identical": same,
        }
        if as_json:
            print(json.dumps(result, indent=2))
        else:
            print(
                f"upload   {format_size(nbytes)} in {t_up:.2f} s  {format_rate(nbytes / t_up)}\n"
                f"download {format_size(nbytes)} in {t_down:.2f} s  "
                f"{format_rate(nbytes / t_down)}\n"
                f"round trip byte-identical: {'yes' if same else 'NO'}",
                file=out,
            )
        return 0 if same else 8
