"""from_env reads the AWS CLI s3 settings: flags > environment > config file > defaults."""

from __future__ import annotations

import os

import pytest

from fastxfer import InvalidConfig, TransferConfig
from fastxfer.limits import MiB

CONFIG = """\
[default]
region = us-east-1
s3 =
  max_concurrent_requests = 20
  multipart_chunksize = 32MB
  multipart_threshold = 64MB
  max_bandwidth = 50MB/s

[profile slow]
s3 =
  max_concurrent_requests = 4
"""


@pytest.fixture
def aws_config(tmp_path: os.PathLike[str]) -> str:
    path = os.path.join(tmp_path, "config")
    with open(path, "w", encoding="utf-8") as f:
        f.write(CONFIG)
    return path


def test_the_profiles_s3_section_fills_what_nothing_else_set(aws_config: str) -> None:
    cfg = TransferConfig.from_env({"AWS_CONFIG_FILE": aws_config})
    assert cfg.max_concurrency == 20
    assert cfg.part_size == 32 * MiB  # the AWS CLI's MB is 1024-based
    assert cfg.multipart_threshold == 64 * MiB
    assert cfg.bwlimit == 50 * MiB


def test_environment_and_flags_win_over_the_file(aws_config: str) -> None:
    env = {"AWS_CONFIG_FILE": aws_config, "FASTXFER_CONCURRENCY": "12"}
    assert TransferConfig.from_env(env).max_concurrency == 12
    assert TransferConfig.from_env(env, max_concurrency=3).max_concurrency == 3
    assert TransferConfig.from_env(env).part_size == 32 * MiB  # the rest still from the file


def test_the_chosen_profile_is_read(aws_config: str) -> None:
    env = {"AWS_CONFIG_FILE": aws_config, "AWS_PROFILE": "slow"}
    assert TransferConfig.from_env(env).max_concurrency == 4
    assert TransferConfig.from_env({"AWS_CONFIG_FILE": aws_config}, profile="slow").part_size == (
        TransferConfig().part_size
    )


def test_a_bad_value_names_the_file_and_key(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "config")
    with open(path, "w", encoding="utf-8") as f:
        f.write("[default]\ns3 =\n  multipart_chunksize = lots\n")
    with pytest.raises(InvalidConfig, match=r"\[default\] s3.multipart_chunksize"):
        TransferConfig.from_env({"AWS_CONFIG_FILE": path})


def test_no_file_means_defaults(tmp_path: os.PathLike[str]) -> None:
    cfg = TransferConfig.from_env({"AWS_CONFIG_FILE": os.path.join(tmp_path, "missing")})
    assert cfg.max_concurrency == TransferConfig().max_concurrency
