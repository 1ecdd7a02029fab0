"""Config files: the seed's shapes, clear errors, and the credentials warning."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from core.config import load_config
from core.errors import ConfigError
from tests.conftest import REPO_ROOT

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("name", ["config.json", "cloud-config.json", "adapted-config.json"])
def test_example_configs_load_with_their_sample_task(name: str) -> None:
    config = load_config(REPO_ROOT / "examples" / name)
    assert config.sample_task is not None
    assert config.warnings == []


def write(tmp_path: Path, content: str) -> Path:
    path = tmp_path / "config.json"
    path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{", "not valid JSON"),
        ("[]", "must hold a JSON object, not an array"),
        ('{"sample_task": [1]}', "'sample_task' must be an object, not an array"),
        ('{"sample_task": "x"}', "'sample_task' must be an object, not a string"),
        ('{"provider": 3, "sample_task": {}}', "'provider' must be a string, not a number"),
        ('{"provider": "ibm"}', "unknown provider 'ibm'"),
        ('{"config": "x"}', "'config' must be an object"),
        ('{"result_bucket": null}', "'result_bucket' must be a string, not null"),
        ('{"sample_task": {}, "sample_task": {}}', "'sample_task' appears more than once"),
    ],
)
def test_bad_configs_raise_one_clear_error(tmp_path: Path, content: str, words: str) -> None:
    with pytest.raises(ConfigError, match="config file") as caught:
        load_config(write(tmp_path, content))
    assert words in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.json")


def test_config_given_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_credentials_in_a_config_are_warned_about_with_the_provider_chain(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        json.dumps(
            {
                "provider": "aws",
                "config": {"aws_access_key_id": "AKIAEXAMPLE", "secret_access_key": "abc"},
                "sample_task": {"id": "t", "data": {"num1": 1, "num2": 2}},
            }
        ),
    )
    warnings = load_config(path).warnings
    assert len(warnings) == 2
    assert all("AWS default credential chain" in w for w in warnings)
    assert any("'config.aws_access_key_id'" in w for w in warnings)


def test_unknown_fields_are_warned_about_not_fatal(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '{"sample_task": {}, "colour": "red"}'))
    assert config.warnings == [
        f"config file {tmp_path / 'config.json'}: ignoring unknown field 'colour'"
    ]
