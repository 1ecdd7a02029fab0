"""The reliability gauntlet reuses every real server of the integration tests, plus a
``reliability_row`` fixture that records each test's figures for RELIABILITY.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

# The servers and resources of the integration tests, for the gauntlet's own tests.
from tests.integration.aws.conftest import (  # noqa: F401
    aws_env,
    bucket,
    moto_endpoint,
    queues,
    s3,
    sqs,
)
from tests.integration.azure.conftest import azurite, container  # noqa: F401
from tests.integration.gcp.conftest import (  # noqa: F401
    function_source,
    gcs_client,
    gcs_emulator,
    new_bucket,
)
from tests.reliability.ledger import Row, record

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.fixture
def reliability_row(request: pytest.FixtureRequest) -> Callable[[Row], None]:
    """Call with the test's :class:`Row`: it is checked (ledger balanced, nothing lost or
    wrong) and saved for ``python -m tests.reliability.report``."""

    def save(row: Row) -> None:
        record(row, request.node.nodeid)

    return save
