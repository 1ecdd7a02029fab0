"""Where a job lives: flags, the job's manifest, the stack's outputs (real terraform reading a
state file), the cloud config file and the environment, in that order."""

from __future__ import annotations

import argparse
import importlib
import json
import re
from typing import TYPE_CHECKING

import pytest

from core.clouds import CLOUDS
from core.errors import ConfigError
from core.ops.target import (
    Setting,
    add_target_arguments,
    config_provider,
    resolve_target,
    terraform_outputs,
)
from tests.conftest import REPO_ROOT
from tests.support.terraform_state import require_terraform, write_state

if TYPE_CHECKING:
    from pathlib import Path

SETTINGS = (
    Setting("queue_url", "queue", output="queue_url", config="queue_name"),
    Setting("bucket", "bucket", output="results_bucket", config="result_bucket"),
    Setting(
        "region",
        "region",
        output="region",
        config="config.region",
        env=("AWS_REGION", "AWS_DEFAULT_REGION"),
    ),
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_target_arguments(parser, SETTINGS)
    return parser.parse_args(argv)


@pytest.fixture
def terraform() -> None:
    require_terraform()


def test_flags_win_over_stack_config_and_environment(tmp_path: Path, terraform: None) -> None:
    stack = write_state(tmp_path / "stack", {"queue_url": "from-stack", "results_bucket": "sb"})
    config = tmp_path / "job.json"
    config.write_text(
        json.dumps(
            {
                "provider": "aws",
                "job_id": "j",
                "queue_name": "from-config",
                "result_bucket": "cb",
                "config": {"region": "eu-west-1"},
            }
        )
    )
    args = parse("--queue-url", "from-flag", "--stack", str(stack), "--config", str(config))
    target = resolve_target("aws", SETTINGS, args, environ={"AWS_REGION": "us-east-2"})
    assert target.values == {"queue_url": "from-flag", "bucket": "sb", "region": "eu-west-1"}
    assert target.sources["bucket"] == f"stack {stack}"
    assert target.job == "j"


def test_environment_fills_what_nothing_else_gives_and_both_region_variables_count(
    tmp_path: Path,
) -> None:
    args = parse()
    for variable in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        target = resolve_target(
            "aws", SETTINGS, args, environ={variable: "ap-south-1"}, cwd=tmp_path
        )
        assert target.get("region") == "ap-south-1"


def test_the_repos_stack_is_read_by_default_when_it_has_state(
    tmp_path: Path, terraform: None
) -> None:
    write_state(tmp_path / "infra" / "aws", {"queue_url": "q-default"})
    target = resolve_target("aws", SETTINGS, parse(), environ={}, cwd=tmp_path)
    assert target.get("queue_url") == "q-default"
    # ...but not when the job's manifest already says where the job lives
    remembered = resolve_target(
        "aws", SETTINGS, parse(), remembered={"queue_url": "q-job"}, environ={}, cwd=tmp_path
    )
    assert remembered.get("queue_url") == "q-job"


def test_a_stack_without_outputs_says_to_apply_it(tmp_path: Path, terraform: None) -> None:
    write_state(tmp_path / "s", {})
    with pytest.raises(ConfigError, match="terraform apply"):
        terraform_outputs(tmp_path / "s")


def test_a_missing_setting_names_every_way_to_give_it(tmp_path: Path) -> None:
    target = resolve_target("aws", SETTINGS, parse(), environ={}, cwd=tmp_path)
    with pytest.raises(ConfigError) as raised:
        target.require("region", SETTINGS, "adder submit aws")
    text = str(raised.value)
    for way in ("--region", "terraform output region", "config.region", "$AWS_REGION"):
        assert way in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        ("[]", "JSON object"),
        ('{"provider": "gcp"}', "for provider 'gcp', not 'aws'"),
    ],
)
def test_a_bad_config_file_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    config = tmp_path / "job.json"
    config.write_text(content)
    with pytest.raises(ConfigError, match=message):
        resolve_target("aws", SETTINGS, parse("--config", str(config)), environ={}, cwd=tmp_path)


def test_a_config_file_with_a_utf8_bom_is_read_as_the_local_runner_reads_it(
    tmp_path: Path,
) -> None:
    # GIVEN a cloud config saved by an editor that writes a BOM
    config = tmp_path / "job.json"
    config.write_bytes(b'\xef\xbb\xbf{"provider": "aws", "queue_name": "q"}')
    # THEN the cloud commands read it (the local runner always did)
    args = parse("--config", str(config))
    target = resolve_target("aws", SETTINGS, args, environ={}, cwd=tmp_path)
    assert target.get("queue_url") == "q"
    assert config_provider(str(config)) == "aws"


def test_the_provider_of_a_config_file(tmp_path: Path) -> None:
    config = tmp_path / "job.json"
    config.write_text('{"provider": "gcp"}')
    assert config_provider(str(config)) == "gcp"
    config.write_text("{}")
    with pytest.raises(ConfigError, match="names no provider"):
        config_provider(str(config))


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_every_stack_output_a_setting_reads_is_declared_by_the_stack(cloud: str) -> None:
    # GIVEN the cloud's settings and its stack's outputs.tf
    declared = set(
        re.findall(
            r'^output\s+"([^"]+)"', (REPO_ROOT / "infra" / cloud / "outputs.tf").read_text(), re.M
        )
    )
    settings = importlib.import_module(CLOUDS[cloud].operator_module).SETTINGS
    # THEN `--stack infra/<cloud>` can give every setting that names an output (the sandbox's
    # endpoint_url output exists only in its own copy of the AWS stack)
    wanted = {s.output for s in settings if s.output} - {"endpoint_url"}
    assert wanted <= declared, wanted - declared
    assert wanted, "a cloud whose settings read no stack output"
