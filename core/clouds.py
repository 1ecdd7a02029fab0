"""The one registry of clouds: what each is called, where its code lives, what it ships.

The CLI, packaging, the config check, the tests and the README's table read this; adding a
cloud starts with one entry here (see docs/design.md, "How to add a cloud"). Standard library
only, and importing it imports no cloud code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

CORE_RUNTIME_MODULES = (
    "__init__.py",
    "delivery.py",
    "errors.py",
    "group_commit.py",
    "ids.py",
    "jsontext.py",
    "numbers.py",
    "observe.py",
    "outcome.py",
    "packing.py",
    "pipeline.py",
    "ports.py",
    "records.py",
    "settings.py",
    "task.py",
)
"""The part of core that runs inside a function: the pipeline and the port. The operator's
code (CLI, runner, packaging, submit, progress) stays out of every deployment zip."""


@dataclass(frozen=True)
class Cloud:
    """One cloud: its runtime (what the deployment zip holds) and its operator commands."""

    name: str
    """The CLI's word (``adder submit aws``) and the config file's ``provider``."""
    title: str
    package: str
    """The project folder that holds the cloud's code."""
    runtime_modules: tuple[str, ...]
    """Files of ``package`` that run inside the function; nothing else goes in the zip."""
    operator_module: str
    """Module with ``SETTINGS`` (the job's settings: flags, stack outputs, config keys) and
    ``open_backend(target, command)`` (its :class:`core.ops.backend.JobBackend`); importing
    it imports no SDK. ``adder submit|watch|fetch|redrive|status <name>`` come from it."""
    extra: str
    """The pip extra that installs the cloud's SDKs."""
    credential_chain: str
    """Where credentials come from, for messages that tell users not to put keys in files."""
    store_factory: str
    """``module:function`` that builds the function's store from its settings (a mapping;
    the process environment by default), raising ConfigError for a missing one."""
    root_files: Mapping[str, str] = field(default_factory=dict)
    """Files at the zip's root: archive name -> path relative to the project root."""
    sandbox_module: str | None = None
    """Module with ``register_sandbox_command(group, cloud)``: ``adder sandbox <name>`` runs
    the cloud's stack on this machine (emulators); None when the cloud has no sandbox."""
    worker_binding: str | None = None
    """``module:function`` giving ``adder work`` the cloud's queue receiver and results store
    (``function(config, concurrency) -> (Receiver, ResultStore)``, see core/worker/port.py);
    None when the cloud has no receiver yet."""

    @property
    def install_hint(self) -> str:
        """The command that installs what the cloud's commands need."""
        return f"pip install 'adder-tasks[{self.extra}]'"

    @property
    def zip_path(self) -> str:
        """Where ``adder package <name>`` writes, relative to the working directory."""
        return f"dist/{self.package}.zip"


CLOUDS: Mapping[str, Cloud] = {
    cloud.name: cloud
    for cloud in (
        Cloud(
            name="aws",
            title="AWS Lambda",
            package="aws_lambda",
            runtime_modules=(
                "__init__.py",
                "batch.py",
                "envelope.py",
                "handler.py",
                "s3_store.py",
            ),
            operator_module="aws_lambda.jobs",
            store_factory="aws_lambda.s3_store:store_from_environment",
            extra="aws",
            sandbox_module="aws_lambda.sandbox.command",
            worker_binding="aws_lambda.sqs_receiver:open_worker",
            credential_chain="the AWS default credential chain (environment, ~/.aws/config,"
            " SSO or an IAM role)",
        ),
        Cloud(
            name="gcp",
            title="Google Cloud Run functions",
            package="gcp_function",
            runtime_modules=(
                "__init__.py",
                "envelope.py",
                "gcs_store.py",
                "handler.py",
                "logs.py",
            ),
            operator_module="gcp_function.jobs",
            store_factory="gcp_function.gcs_store:store_from_environment",
            extra="gcp",
            credential_chain="Application Default Credentials (gcloud auth application-default"
            " login, or the attached service account)",
            root_files={
                "main.py": "gcp_function/main.py",
                "requirements.txt": "gcp_function/requirements.txt",
            },
            worker_binding="gcp_function.pubsub_receiver:open_worker",
        ),
        Cloud(
            name="azure",
            title="Azure Functions",
            package="azure_function",
            runtime_modules=("__init__.py", "blob_store.py", "handler.py"),
            operator_module="azure_function.jobs",
            store_factory="azure_function.blob_store:store_from_environment",
            extra="azure",
            credential_chain="DefaultAzureCredential (az login, environment, or a managed"
            " identity)",
            root_files={
                "function_app.py": "azure_function/function_app.py",
                "host.json": "azure_function/host.json",
                "requirements.txt": "azure_function/requirements.txt",
            },
            worker_binding="azure_function.servicebus_receiver:open_worker",
        ),
    )
}
"""Every cloud, by name."""
