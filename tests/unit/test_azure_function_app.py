"""The Azure function without the host or the network: its registration, as the Python worker
indexes it, and the decode -> pipeline -> log path with an in-memory store; for the packed
layout also the batch trigger, and what host.json and infra/azure set for it."""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import typing
from typing import TYPE_CHECKING, Any

import azure.functions as func
import hcl2
import pytest
from azure.functions.servicebus import ServiceBusMessageInConverter

from azure_function import function_app
from azure_function.handler import decode_servicebus_message, handle_batch, handle_message
from core.delivery import Delivery
from core.errors import ConfigError, StoreWriteError
from core.outcome import OutcomeKind
from core.packing import ResultsLayout, is_pack_name, unpack
from tests.conftest import REPO_ROOT, load_event
from tests.integration.azure.batches import (
    Sent,
    batch_of,
    batch_of_bodies,
    packed_function,
    packed_user_function,
)
from tests.integration.azure.messages import (
    AZURE_EVENTS,
    make_message,
    registered_function,
    servicebus_message,
)
from tests.unit.fakes import InMemoryResultStore

if TYPE_CHECKING:
    from pathlib import Path

LOGGER_NAME = "azure_function"


def log_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == LOGGER_NAME]


# --- registration -------------------------------------------------------------------------


def test_trigger_binding_reads_queue_and_connection_from_app_settings() -> None:
    # GIVEN the registered function / WHEN its function.json is generated
    document = json.loads(registered_function().get_function_json())
    # THEN it is one Service Bus queue trigger, named by app settings
    assert document["scriptFile"] == "function_app.py"
    assert document["bindings"] == [
        {
            "direction": "IN",
            "type": "serviceBusTrigger",
            "name": "msg",
            "connection": "SERVICEBUS_CONNECTION",
            "queueName": "%TASK_QUEUE_NAME%",
        }
    ]


def test_the_worker_can_index_the_function() -> None:
    # GIVEN the function the worker receives at indexing
    function = registered_function()
    user_function = function.get_user_function()
    # WHEN its signature is checked the way the worker does (typing.get_type_hints)
    hints = typing.get_type_hints(user_function)
    parameters = list(inspect.signature(user_function).parameters)
    # THEN every binding has its parameter, the trigger's annotation is accepted, it is sync
    assert parameters == [binding.name for binding in function.get_bindings()] == ["msg"]
    assert ServiceBusMessageInConverter.check_input_type_annotation(hints["msg"])
    assert hints["return"] is type(None)
    assert not inspect.iscoroutinefunction(user_function)


def test_importing_the_app_needs_no_settings_and_no_storage_sdk() -> None:
    # GIVEN a fresh interpreter with none of the app settings
    code = (
        "import sys; import azure_function.function_app as m; "
        "print(sorted(n for n in sys.modules if n.startswith(('azure.storage', 'azure.identity'))))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT)}
    # WHEN the function app is imported
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    # THEN the import succeeds (no "0 functions loaded") and the storage SDKs wait for a message
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# --- decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", AZURE_EVENTS)
def test_decode_takes_body_id_and_delivery_count_from_the_message(name: str) -> None:
    # GIVEN a message built by the worker's converter from a sample invocation
    event = load_event(name)
    message = servicebus_message(name)
    # WHEN it is decoded
    delivery = decode_servicebus_message(message)
    # THEN the body is the exact bytes, and the metadata is the host's
    metadata = event["trigger_metadata"]
    assert delivery.body == message.get_body()
    assert delivery.message_id == metadata["MessageId"]["value"]
    assert delivery.attempt == metadata["DeliveryCount"]["value"]


def test_decode_of_a_message_without_metadata() -> None:
    # GIVEN the public constructor, which leaves every property empty
    message = func.ServiceBusMessage(body=b"{}")
    # WHEN it is decoded / THEN the missing properties are None, not errors
    assert decode_servicebus_message(message) == Delivery(b"{}", None, None)


class _UnreadableBody(func.ServiceBusMessage):
    def get_body(self) -> bytes:
        raise ValueError("the binding could not read the body")


def test_an_unreadable_body_is_recorded_as_a_bad_task(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a message whose body cannot be read, and a store
    store = InMemoryResultStore()
    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN it is handled
    outcome = handle_message(_UnreadableBody(), lambda: store)
    # THEN it is rejected, with an error record named by the hash of what was there (nothing)
    assert outcome.kind is OutcomeKind.REJECTED
    name = f"invalid-{hashlib.sha256(b'').hexdigest()}.err"
    assert json.loads(store.objects[name])["error"] == "empty"
    assert log_lines(caplog)[0]["outcome"] == "rejected"


# --- handling -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", AZURE_EVENTS)
def test_each_sample_message_ends_as_expected(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a sample message, and the app's store replaced by an empty in-memory one
    expected = load_event(name)["expected"]
    message = servicebus_message(name)
    store = InMemoryResultStore()
    monkeypatch.setattr(function_app, "results_store", lambda: store)
    # WHEN the registered function handles it
    returned = registered_function().get_user_function()(message)
    # THEN it returns normally (the host completes the message) after writing one record
    assert returned is None
    (record,) = store.objects
    if "content" in expected:
        assert (record, store.objects[record].decode()) == (expected["record"], expected["content"])
    else:
        digest = hashlib.sha256(message.get_body()).hexdigest()
        assert record == expected.get("record", f"invalid-{digest}.err")
        assert json.loads(store.objects[record])["error"] == expected["error"]


def test_success_rejection_and_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN an in-memory store and captured logs
    store = InMemoryResultStore()
    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN a good and a bad message are handled
    good = handle_message(servicebus_message("azure_servicebus_string_body.json"), lambda: store)
    bad = handle_message(servicebus_message("azure_servicebus_bad_task.json"), lambda: store)
    # THEN the result and the error record are written
    assert good.kind is OutcomeKind.SUCCEEDED
    assert store.objects["az-task-2.out"] == b"12345678901234567891.5"
    assert bad.kind is OutcomeKind.REJECTED
    assert json.loads(store.objects["az-bad-1.err"])["error"] == "invalid_number"
    # AND each message logged one JSON line with the outcome and the Service Bus metadata
    first, second = log_lines(caplog)
    assert first["task_id"] == "az-task-2"
    assert first["message_id"] == "1e6f3b4c0d8a5f2bb2c3d4e5f6071829"
    assert first["delivery_attempt"] == 3
    assert first["outcome"] == "succeeded"
    assert second["outcome"] == "rejected"
    assert second["error_code"] == "invalid_number"
    assert [r.levelno for r in caplog.records if r.name == LOGGER_NAME] == [
        logging.INFO,
        logging.WARNING,
    ]


def test_a_store_failure_is_raised_and_logged_as_retry(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a store that fails every write
    store = InMemoryResultStore(fail_all=True)
    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN a good message is handled / THEN the failure reaches the host (message abandoned)
    with pytest.raises(StoreWriteError):
        handle_message(
            make_message(b'{"id": "t1", "num1": 1, "num2": 2}', delivery_count=4), lambda: store
        )
    # AND the log line says it will be retried
    (line,) = log_lines(caplog)
    assert line["outcome"] == "retry"
    assert line["error_type"] == "StoreWriteError"
    assert line["delivery_attempt"] == 4
    assert caplog.records[-1].levelno == logging.ERROR


def test_an_unconfigured_store_is_raised_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a store factory that cannot configure the store
    def no_store() -> InMemoryResultStore:
        raise ConfigError("set RESULTS_CONTAINER")

    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN a message is handled / THEN the error is raised (redelivery, then dead letter) and logged
    with pytest.raises(ConfigError):
        handle_message(make_message(b"{}"), no_store)
    assert log_lines(caplog)[0]["error_type"] == "ConfigError"


def test_the_decorated_function_is_callable_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the module's store replaced by an in-memory one
    store = InMemoryResultStore()
    monkeypatch.setattr(function_app, "results_store", lambda: store)
    # WHEN the decorated name itself is called (azure-functions >= 1.21)
    function_app.process_task(servicebus_message("azure_servicebus_task.json"))
    # THEN the message was handled through the same code
    assert store.objects == {"az-task-1.out": b"0.3"}


# --- packed layout: registration ------------------------------------------------------------

TRIGGER = {
    "direction": "IN",
    "type": "serviceBusTrigger",
    "connection": "SERVICEBUS_CONNECTION",
    "queueName": "%TASK_QUEUE_NAME%",
}


def test_packed_layout_registers_only_the_batch_trigger() -> None:
    # GIVEN RESULTS_LAYOUT=packed when the worker indexes the app
    function = packed_function({"RESULTS_LAYOUT": "packed"})
    # WHEN its function.json is generated
    document = json.loads(function.get_function_json())
    # THEN the app's one function is the batch trigger: a list of messages per call, bodies as
    # bytes (not re-serialized JSON), on the same queue and connection as the default
    assert function.get_function_name() == "process_batch"
    assert document["bindings"] == [
        {**TRIGGER, "name": "msgs", "cardinality": "MANY", "dataType": "BINARY"}
    ]


@pytest.mark.parametrize("value", [None, "", "per_task", " per_task ", "zip", "Packed"])
def test_every_other_layout_registers_only_the_single_message_trigger(value: str | None) -> None:
    # GIVEN RESULTS_LAYOUT unset, the default, or a value that is no layout
    environ = {} if value is None else {"RESULTS_LAYOUT": value}
    # WHEN the app is built for it / THEN its one function takes one message per call
    function = packed_function(environ)
    assert function.get_function_name() == "process_task"
    assert json.loads(function.get_function_json())["bindings"] == [{**TRIGGER, "name": "msg"}]


def test_the_worker_can_index_the_batch_function() -> None:
    # GIVEN the batch function the worker receives at indexing
    function = packed_function()
    user_function = function.get_user_function()
    # WHEN its signature is checked the way the worker does (typing.get_type_hints)
    hints = typing.get_type_hints(user_function)
    parameters = list(inspect.signature(user_function).parameters)
    # THEN the binding has its parameter, the list annotation is accepted, it is sync
    assert parameters == [binding.name for binding in function.get_bindings()] == ["msgs"]
    assert ServiceBusMessageInConverter.check_input_type_annotation(hints["msgs"])
    assert hints["return"] is type(None)
    assert not inspect.iscoroutinefunction(user_function)
    # AND the builtin spelling would not be (why function_app spells it typing.List)
    assert not ServiceBusMessageInConverter.check_input_type_annotation(
        list[func.ServiceBusMessage]
    )


@pytest.mark.parametrize(("layout", "name"), [("packed", "process_batch"), ("zip", "process_task")])
def test_importing_the_app_with_a_layout_and_nothing_else_loads_one_function(
    layout: str, name: str
) -> None:
    # GIVEN a fresh interpreter with RESULTS_LAYOUT and none of the other app settings
    code = (
        "import sys; import azure_function.function_app as m; "
        "print([f.get_function_name() for f in m.app.get_functions()]); "
        "print(sorted(n for n in sys.modules if n.startswith(('azure.storage', 'azure.identity'))))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "RESULTS_LAYOUT": layout}
    # WHEN the worker would import and index the app
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    # THEN it loads exactly that layout's function (never "0 functions loaded"), and the
    # storage SDKs still wait for a message
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [repr([name]), "[]"]


def test_a_bad_layout_fails_every_message_with_the_fix(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the app indexed with RESULTS_LAYOUT=zip, every other setting present
    for name, value in {
        "RESULTS_LAYOUT": "zip",
        "RESULTS_CONTAINER": "results",
        "RESULTS_BLOB_CONNECTION_STRING": "UseDevelopmentStorage=true",
    }.items():
        monkeypatch.setenv(name, value)
    function_app.results_store.cache_clear()
    user_function = packed_function({"RESULTS_LAYOUT": "zip"}).get_user_function()
    caplog.set_level(logging.INFO, LOGGER_NAME)
    try:
        # WHEN a good message arrives / THEN it raises: the message is abandoned, retried, and
        # finally dead-lettered, never completed
        with pytest.raises(ConfigError, match="RESULTS_LAYOUT='zip': use 'per_task' or 'packed'"):
            user_function(make_message(b'{"id": "t1", "data": {"num1": 1, "num2": 2}}'))
    finally:
        function_app.results_store.cache_clear()
    # AND its one log line names the setting and the values that would work
    (line,) = log_lines(caplog)
    assert (line["outcome"], line["error_type"]) == ("retry", "ConfigError")
    assert line["reason"] == "RESULTS_LAYOUT='zip': use 'per_task' or 'packed'"


# --- packed layout: handling ----------------------------------------------------------------

BATCH_BODIES = [
    b'{"id": "p-1", "data": {"num1": 42, "num2": 58}}',
    b'{"id": "p-2", "data": {"num1": 12345678901234567890, "num2": 1.5}}',
    b'{"id": "p-bad", "data": {"num1": true, "num2": 1}}',
    b"not json \xff",
    b"",
    '{"id": "tâche-数", "data": {"num1": 1e3, "num2": -1.5}}'.encode(),
]


def test_a_batch_is_one_pack_holding_exactly_what_one_by_one_handling_writes() -> None:
    # GIVEN the same messages handled one by one (the default layout) into one store
    one_by_one = InMemoryResultStore()
    for message in batch_of_bodies(BATCH_BODIES):
        handle_message(message, lambda: one_by_one)
    # WHEN they are handled as one batch into another store, under a prefix
    packed = InMemoryResultStore()
    packed.prefix = "jobs/2026"
    outcomes = handle_batch(batch_of_bodies(BATCH_BODIES), lambda: packed)
    # THEN every message was acknowledged, and the store got exactly one write: a pack
    assert [o.kind for o in outcomes] == [
        OutcomeKind.SUCCEEDED,
        OutcomeKind.SUCCEEDED,
        OutcomeKind.REJECTED,
        OutcomeKind.REJECTED,
        OutcomeKind.REJECTED,
        OutcomeKind.SUCCEEDED,
    ]
    ((key, body),) = packed.objects.items()
    assert key.startswith("jobs/2026/packed/") and is_pack_name(key.rsplit("/", 1)[1])
    # AND unpacked, it is byte for byte the files of the default layout
    assert {record.file_name: record.content for record in unpack(body)} == one_by_one.objects


def test_a_batch_logs_one_line_per_message_with_its_delivery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a batch of a redelivered good message and a first bad one
    store = InMemoryResultStore()
    caplog.set_level(logging.INFO, LOGGER_NAME)
    batch = batch_of(
        [Sent(BATCH_BODIES[0], "sb-1", delivery_count=3), Sent(BATCH_BODIES[2], "sb-2")]
    )
    # WHEN it is handled
    handle_batch(batch, lambda: store)
    # THEN each message has its own line, with its id, delivery count and outcome
    lines = log_lines(caplog)
    assert [(x["message_id"], x["delivery_attempt"], x["outcome"]) for x in lines] == [
        ("sb-1", 3, "succeeded"),
        ("sb-2", 1, "rejected"),
    ]
    assert lines[1]["error_code"] == "invalid_number"


def test_a_failed_pack_write_raises_and_every_message_is_logged_for_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a store that fails every write
    store = InMemoryResultStore(fail_all=True)
    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN a batch of good and bad messages is handled / THEN the failure reaches the host,
    # which abandons the whole batch
    with pytest.raises(StoreWriteError):
        handle_batch(batch_of_bodies(BATCH_BODIES), lambda: store)
    # AND nothing was written, and every message, the bad ones too, is logged as a retry
    assert store.objects == {}
    lines = log_lines(caplog)
    assert [(x["message_id"], x["outcome"]) for x in lines] == [
        (f"m-{index}", "retry") for index in range(len(BATCH_BODIES))
    ]
    assert {x["error_type"] for x in lines} == {"StoreWriteError"}


def test_an_unconfigured_store_fails_the_batch(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a store factory that cannot configure the store
    def no_store() -> InMemoryResultStore:
        raise ConfigError("set RESULTS_CONTAINER")

    caplog.set_level(logging.INFO, LOGGER_NAME)
    # WHEN a batch arrives / THEN the error reaches the host and every message logs it
    with pytest.raises(ConfigError, match="set RESULTS_CONTAINER"):
        handle_batch(batch_of_bodies(BATCH_BODIES[:3]), no_store)
    lines = log_lines(caplog)
    assert [(x["outcome"], x["error_type"]) for x in lines] == [("retry", "ConfigError")] * 3


def test_the_registered_batch_function_handles_a_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the app's store replaced by an in-memory one
    store = InMemoryResultStore()
    monkeypatch.setattr(function_app, "results_store", lambda: store)
    # WHEN the packed app's function gets every sample message in one batch
    messages = [servicebus_message(name) for name in AZURE_EVENTS]
    bodies = [message.get_body() for message in messages]
    returned = packed_user_function()(batch_of_bodies(bodies))
    # THEN it returns normally (the host completes the batch) after one write holding one
    # record per sample, as each sample's event expects
    assert returned is None
    ((_, body),) = store.objects.items()
    records = {record.file_name: record.content for record in unpack(body)}
    for name, message in zip(AZURE_EVENTS, messages, strict=True):
        expected = load_event(name)["expected"]
        if "content" in expected:
            assert records[expected["record"]].decode() == expected["content"]
        else:
            digest = hashlib.sha256(message.get_body()).hexdigest()
            record = expected.get("record", f"invalid-{digest}.err")
            assert json.loads(records[record])["error"] == expected["error"]
    assert len(records) == len(AZURE_EVENTS)


# --- packed layout: host.json and infra/azure -----------------------------------------------

INFRA = REPO_ROOT / "infra" / "azure"
HOST_JSON = REPO_ROOT / "azure_function" / "host.json"
BATCH_SIZE_SETTING = "AzureFunctionsJobHost__extensions__serviceBus__maxMessageBatchSize"


def hcl_blocks(path: Path, kind: str) -> dict[str, Any]:
    """The ``kind`` blocks of a .tf file by name (python-hcl2 keeps the label quotes)."""
    blocks: dict[str, Any] = {}
    for block in hcl2.load(path.open(encoding="utf-8")).get(kind, []):
        blocks.update({name.strip('"'): body for name, body in block.items()})
    return blocks


def function_app_block() -> dict[str, Any]:
    resources = hcl_blocks(INFRA / "main.tf", "resource")
    app: dict[str, Any] = resources["azurerm_function_app_flex_consumption"]['"this"']
    return app


def test_host_json_batch_settings_match_the_stack_and_keep_the_default_unchanged() -> None:
    # GIVEN host.json and the stack's variable
    host = json.loads(HOST_JSON.read_text(encoding="utf-8"))
    service_bus = host["extensions"]["serviceBus"]
    variable = hcl_blocks(INFRA / "variables.tf", "variable")["max_message_batch_size"]
    # THEN a local host gets the stack's default batch size, and batches are dispatched as
    # received (no cache holding locks that a batch trigger never renews)
    assert service_bus["maxMessageBatchSize"] == variable["default"] == 1000
    assert service_bus["minMessageBatchSize"] == 1
    # AND the one-message settings the default layout relies on are still there
    assert (service_bus["autoCompleteMessages"], service_bus["prefetchCount"]) == (True, 0)
    # AND the batch function's one line per message passes the log filter
    assert host["logging"]["logLevel"]["Function.process_batch.User"] == "Information"


def test_the_stack_passes_the_layout_and_batch_size_to_the_function() -> None:
    # GIVEN the function app's app settings in infra/azure
    settings = function_app_block()["app_settings"]
    # THEN RESULTS_LAYOUT is the variable, and the batch size overrides host.json's
    assert settings["RESULTS_LAYOUT"] == "${var.results_layout}"
    assert settings[BATCH_SIZE_SETTING] == "${tostring(var.max_message_batch_size)}"
    # AND the override's name is the host.json path of the setting
    path = BATCH_SIZE_SETTING.removeprefix("AzureFunctionsJobHost__").split("__")
    node: Any = json.loads(HOST_JSON.read_text(encoding="utf-8"))
    for part in path:
        node = node[part]
    assert node == 1000


def test_the_stack_layouts_are_the_function_layouts_and_its_outputs_say_them() -> None:
    # GIVEN the stack's variables and outputs
    variables = hcl_blocks(INFRA / "variables.tf", "variable")
    outputs = hcl_blocks(INFRA / "outputs.tf", "output")
    layout = variables["results_layout"]
    # THEN its default is the function's default and its validation allows exactly the
    # layouts the function knows
    assert layout["default"] == f'"{ResultsLayout.PER_TASK.value}"'
    (validation,) = layout["validation"]
    allowed = re.findall(r'"(\w+)"', validation["condition"])
    assert sorted(allowed) == sorted(item.value for item in ResultsLayout)
    # AND the outputs `adder estimate` reads are there
    assert outputs["results_layout"]["value"] == "${var.results_layout}"
    assert outputs["max_message_batch_size"]["value"] == "${var.max_message_batch_size}"
    assert outputs["instance_memory_in_mb"]["value"] == (
        "${azurerm_function_app_flex_consumption.this.instance_memory_in_mb}"
    )
    for name in ("results_layout", "max_message_batch_size", "instance_memory_in_mb"):
        assert outputs[name]["description"].strip('"'), name


def test_the_example_tfvars_sets_both_new_variables() -> None:
    # GIVEN terraform.tfvars.example / THEN it shows both variables with their defaults
    example = hcl2.load((INFRA / "terraform.tfvars.example").open(encoding="utf-8"))
    variables = hcl_blocks(INFRA / "variables.tf", "variable")
    for name in ("results_layout", "max_message_batch_size"):
        assert example[name] == variables[name]["default"], name
    assert example["results_layout"] == '"per_task"'


def terraform_plan(directory: Path, **variables: object) -> subprocess.CompletedProcess[str]:
    """``terraform plan`` of ``directory`` with these variables (no provider, no network)."""
    terraform = shutil.which("terraform")
    assert terraform is not None
    args = [f"-var={name}={value}" for name, value in variables.items()]
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull, "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        [terraform, "plan", "-input=false", "-no-color", "-lock=false", *args],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.infra
def test_the_stack_refuses_a_bad_layout_batch_size_or_memory_combination(tmp_path: Path) -> None:
    # GIVEN the stack's variables, and its function app's precondition on the batch size, in a
    # module of their own (terraform_data carries the precondition: no azurerm provider here)
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    shutil.copy(INFRA / "variables.tf", tmp_path / "variables.tf")
    (precondition,) = function_app_block()["lifecycle"][0]["precondition"]
    condition = precondition["condition"].removeprefix("${").removesuffix("}")
    (tmp_path / "check.tf").write_text(
        'resource "terraform_data" "function_app" {\n  lifecycle {\n    precondition {\n'
        f"      condition     = {condition}\n"
        f"      error_message = {precondition['error_message']}\n    }}\n  }}\n}}\n",
        encoding="utf-8",
    )
    env = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull}
    init = subprocess.run(
        ["terraform", "init", "-input=false", "-no-color"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    base = {"location": "westeurope"}
    # WHEN plans are made / THEN the defaults and both layouts within the memory rule pass
    for accepted in (
        {},
        {"results_layout": "packed"},
        {"results_layout": "packed", "instance_memory_in_mb": 512, "max_message_batch_size": 512},
        {"results_layout": "per_task", "instance_memory_in_mb": 512},
        {"results_layout": "packed", "instance_memory_in_mb": 4096, "max_message_batch_size": 4096},
    ):
        plan = terraform_plan(tmp_path, **base, **accepted)
        assert plan.returncode == 0, (accepted, plan.stderr)
    # AND a layout that is none, a batch size out of range, or a packed batch that may not fit
    # in a quarter of an instance's memory are refused, each with its own message
    for refused, message in (
        ({"results_layout": "zip"}, 'results_layout must be "per_task" or "packed"'),
        ({"max_message_batch_size": 0}, "max_message_batch_size must be a whole number"),
        ({"max_message_batch_size": 4097}, "max_message_batch_size must be a whole number"),
        ({"max_message_batch_size": 2.5}, "max_message_batch_size must be a whole number"),
        (
            {"results_layout": "packed", "instance_memory_in_mb": 512},
            "max_message_batch_size must not exceed instance_memory_in_mb",
        ),
    ):
        plan = terraform_plan(tmp_path, **base, **refused)
        assert plan.returncode != 0, refused
        assert message in " ".join(plan.stderr.split()), (refused, plan.stderr)
