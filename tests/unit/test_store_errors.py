"""Each adapter's one translation of SDK errors: the store's fault -> StoreWriteError (the
queue retries), a bug -> the exception itself (it must not pass for a flaky store)."""

from __future__ import annotations

import http.client

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from google.api_core.exceptions import Forbidden, RetryError, ServiceUnavailable
from google.auth.exceptions import RefreshError

from aws_lambda.s3_store import store_error as s3_error
from azure_function.blob_store import store_error as blob_error
from core.errors import StoreWriteError
from gcp_function.gcs_store import store_error as gcs_error

STORE_FAULTS = {
    "s3": (
        s3_error,
        [
            ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "PutObject"),
            ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject"),
            EndpointConnectionError(endpoint_url="http://127.0.0.1:9"),
            NoCredentialsError(),
        ],
    ),
    "gcs": (
        gcs_error,
        [
            ServiceUnavailable("down"),  # type: ignore[no-untyped-call]
            Forbidden("no"),  # type: ignore[no-untyped-call]
            RetryError("gave up", cause=ServiceUnavailable("down")),  # type: ignore[no-untyped-call]
            RefreshError("token"),  # type: ignore[no-untyped-call]
            requests.ConnectionError("refused"),
            http.client.RemoteDisconnected("closed"),
            ConnectionResetError(),
        ],
    ),
    "blob": (
        blob_error,
        [
            ServiceRequestError("refused"),
            HttpResponseError("503 ServerBusy"),
            ConnectionRefusedError(),
            ValueError("bad connection string"),
        ],
    ),
}

BUGS = [TypeError("bug"), KeyError("bug"), AttributeError("bug"), ZeroDivisionError()]


@pytest.mark.parametrize(
    ("translate", "error"),
    [(translate, error) for translate, errors in STORE_FAULTS.values() for error in errors],
)
def test_store_faults_become_store_write_errors(translate: object, error: Exception) -> None:
    result = translate(error, "where/t.out")  # type: ignore[operator]
    assert isinstance(result, StoreWriteError)
    assert "where/t.out" in str(result)


@pytest.mark.parametrize("name", sorted(STORE_FAULTS))
@pytest.mark.parametrize("bug", BUGS, ids=lambda bug: type(bug).__name__)
def test_bugs_are_not_passed_off_as_store_faults(name: str, bug: Exception) -> None:
    translate = STORE_FAULTS[name][0]
    assert translate(bug, "where/t.out") is bug
