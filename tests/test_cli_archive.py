"""`fastxfer archive` and `fastxfer lifecycle` on moto (it keeps storage classes and rules)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastxfer.cli import main
from fastxfer.coldserver import RealisticMotoServer

T1, T2, T3 = "20260101T000000Z", "20260102T000000Z", "20260103T000000Z"
NAMES = [
    f"duplicity-full.{T1}.vol1.difftar.gpg",
    f"duplicity-full.{T1}.manifest.gpg",
    f"duplicity-full-signatures.{T1}.sigtar.gpg",
    f"duplicity-full.{T2}.vol1.difftar.gpg",
    f"duplicity-full.{T2}.vol2.difftar.gpg",
    f"duplicity-full.{T2}.manifest.gpg",
    f"duplicity-full.{T3}.vol1.difftar.gpg",
    f"duplicity-full.{T3}.manifest.gpg",
]


@pytest.fixture
def env(moto_server: RealisticMotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)


def classes(moto_s3: Any, bucket: str) -> dict[str, str]:
    return {
        n: moto_s3.head_object(Bucket=bucket, Key="b/" + n).get("StorageClass", "STANDARD")
        for n in NAMES
    }


def test_archive_keep_full_dry_run_then_for_real(
    env: None, moto_bucket: str, moto_s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in NAMES:
        moto_s3.put_object(Bucket=moto_bucket, Key="b/" + n, Body=b"x" * 1000)
    url = f"s3://{moto_bucket}/b/"
    assert main(["archive", url, "--keep-full", "1", "--dry-run", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["objects"] == 3  # the volumes of the two older chains
    assert plan["chains_kept"] == 1
    assert set(classes(moto_s3, moto_bucket).values()) == {"STANDARD"}  # a dry run moves nothing

    assert main(["archive", url, "--keep-full", "1", "--json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["moved"] == 3
    assert "get_object" not in done["requests"]
    got = classes(moto_s3, moto_bucket)
    assert [n for n, c in got.items() if c == "DEEP_ARCHIVE"] == [
        NAMES[0],
        NAMES[3],
        NAMES[4],
    ]
    # A rerun finds nothing to do.
    assert main(["archive", url, "--keep-full", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["objects"] == 0


def test_early_deletion_is_refused_unless_accepted(
    env: None, moto_bucket: str, moto_s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for n in NAMES:
        moto_s3.put_object(Bucket=moto_bucket, Key="b/" + n, Body=b"x")
    url = f"s3://{moto_bucket}/b/"
    code = main(["archive", url, "--keep-full", "1", "--delete-after", "120d"])
    err = capsys.readouterr().err
    assert code == 2
    assert "minimum storage duration of 180 days" in err
    assert "early-deletion" in err
    assert set(classes(moto_s3, moto_bucket).values()) == {"STANDARD"}
    # An Expiration rule on the bucket counts as the retention too.
    moto_s3.put_bucket_lifecycle_configuration(
        Bucket=moto_bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "x",
                    "Status": "Enabled",
                    "Filter": {"Prefix": "b/"},
                    "Expiration": {"Days": 100},
                }
            ]
        },
    )
    assert main(["archive", url, "--keep-full", "1"]) == 2
    capsys.readouterr()
    flags = ["--keep-full", "1", "--accept-early-deletion", "--storage-class", "GLACIER"]
    assert main(["archive", url, *flags]) == 0
    assert "GLACIER" in classes(moto_s3, moto_bucket).values()


def test_lifecycle_prints_merges_and_applies(
    env: None, moto_bucket: str, moto_s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    moto_s3.put_bucket_lifecycle_configuration(
        Bucket=moto_bucket,
        LifecycleConfiguration={
            "Rules": [
                {
                    "ID": "logs",
                    "Status": "Enabled",
                    "Filter": {"Prefix": "logs/"},
                    "Expiration": {"Days": 30},
                }
            ]
        },
    )
    url = f"s3://{moto_bucket}/b/"
    args = ["lifecycle", url, "--archive-prefix", "archive/", "--transition-days", "30"]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)["Rules"]
    assert next(r["ID"] for r in printed) == "logs"
    stored = moto_s3.get_bucket_lifecycle_configuration(Bucket=moto_bucket)["Rules"]
    assert [r["ID"] for r in stored] == ["logs"]  # not applied without --apply
    assert main([*args, "--apply"]) == 0
    stored = moto_s3.get_bucket_lifecycle_configuration(Bucket=moto_bucket)["Rules"]
    assert len(stored) == 3
    transition = next(r for r in stored if "Transitions" in r)
    assert transition["Filter"]["Prefix"] == "b/archive/"  # volumes only
