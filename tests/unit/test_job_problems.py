"""One wording for cloud failures: each problem is one line that names the resource and the fix."""

from __future__ import annotations

import pytest

from core.errors import CloudUnavailableError, ConfigError
from core.ops.problems import Problem, Resource, problem_error

QUEUE = Resource("SQS queue q", "check --queue-url", "sqs:SendMessage on it")


@pytest.mark.parametrize(
    ("problem", "kind", "words"),
    [
        (Problem.MISSING, ConfigError, ["SQS queue q does not exist", "check --queue-url"]),
        (Problem.DENIED, ConfigError, ["access denied to SQS queue q", "sqs:SendMessage"]),
        (Problem.UNREACHABLE, ConfigError, ["cannot reach SQS queue q", "--queue-url"]),
        (Problem.REFUSED, ConfigError, ["SQS queue q refused the request"]),
        (Problem.RETRY, CloudUnavailableError, ["SQS queue q: try again later"]),
        (Problem.NO_CREDENTIALS, ConfigError, ["no usable credentials", "aws configure"]),
    ],
)
def test_each_problem_is_one_line_naming_resource_and_fix(
    problem: Problem, kind: type[Exception], words: list[str]
) -> None:
    error = problem_error(problem, QUEUE, "the\nservice's\n words", login="run aws configure")
    assert isinstance(error, kind)
    assert "\n" not in str(error)
    for word in words:
        assert word in str(error)


def test_credential_details_are_never_shown() -> None:
    error = problem_error(Problem.NO_CREDENTIALS, QUEUE, "token=SECRET", login="log in")
    assert "SECRET" not in str(error)


def test_a_long_detail_is_cut() -> None:
    error = problem_error(Problem.REFUSED, QUEUE, "x" * 5000)
    assert len(str(error)) < 300
