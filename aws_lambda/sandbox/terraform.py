"""Drive the real ``terraform`` binary against a copy of a stack (stdlib only).

The AWS stack in ``infra/aws`` is applied against a moto server (``adder sandbox aws``, the
tests) by copying it into another directory, adding a generated ``moto_override.tf``
(Terraform merges ``*_override.tf`` files into the configuration) and running
init/apply/output/destroy. The repository copy of the stack is never written to.

Example::

    with TerraformStack.copy_of(Path("infra/aws")) as stack:
        stack.with_moto_endpoints("http://127.0.0.1:5000")
        stack.with_endpoint_output("http://127.0.0.1:5000")  # optional: `terraform output`
        stack.init()
        variables = {"region": "us-east-1", "lambda_zip_path": str(zip_path)}
        stack.apply(variables)
        outputs = stack.output()
        plan = stack.plan_json({**variables, "batch_size": 5})  # what a change would do
        stack.destroy()
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from types import TracebackType

PLUGIN_DIR_ENV = "TF_PLUGIN_DIR"
"""Environment variable naming a provider mirror for ``terraform init -plugin-dir``."""

TERRAFORM_BIN_ENV = "TERRAFORM_BIN"
"""Environment variable naming the terraform executable (default: from PATH)."""

PROVIDER_BINARY_GLOB = "registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*"

MOTO_SERVICES: tuple[str, ...] = ("iam", "kms", "lambda", "logs", "s3", "sqs", "sts")
"""Provider endpoint keys redirected to moto: every service the AWS stack touches."""

OVERRIDE_FILE_NAME = "moto_override.tf"
ENDPOINT_OUTPUT_FILE_NAME = "moto_outputs.tf"
ENDPOINT_OUTPUT = "endpoint_url"
"""The output a moto copy of the stack adds: the endpoint every client must use."""
VARS_FILE_NAME = "harness.tfvars.json"
PLAN_VARS_FILE_NAME = "plan.tfvars.json"
PLAN_FILE_NAME = "harness.tfplan"

# Resource-level overrides for moto gaps that must not weaken the real stack:
# - moto (5.2) does not implement the SQS RedriveAllowPolicy attribute, so the provider
#   waits forever for it to appear: the resource is dropped (count = 0) under moto only.
# - moto does not store Lambda LoggingConfig and returns RedrivePolicy JSON with extra
#   whitespace; both would show as perpetual drift in a second plan: ignored.
# - moto ignores the request context when it evaluates a bucket policy, so the TLS-only
#   Deny statement (Condition aws:SecureTransport = false) would deny every object
#   request: the bucket policy is dropped (count = 0) under moto only.
_MOTO_RESOURCE_OVERRIDES = """
# moto does not implement RedriveAllowPolicy; the provider would wait for it forever.
resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  count = 0
}

# moto does not store LoggingConfig: ignore the resulting drift.
resource "aws_lambda_function" "this" {
  lifecycle {
    ignore_changes = [logging_config]
  }
}

# moto re-serialises RedrivePolicy with spaces: ignore the whitespace-only drift.
resource "aws_sqs_queue" "this" {
  lifecycle {
    ignore_changes = [redrive_policy]
  }
}

# moto evaluates bucket policies without request context: a Deny with any Condition
# (here aws:SecureTransport = false) denies every object request, even over TLS.
resource "aws_s3_bucket_policy" "results" {
  count = 0
}
"""


class TerraformError(RuntimeError):
    """A terraform command failed or timed out; carries its output."""

    def __init__(
        self, command: Sequence[str], returncode: int | None, stdout: str, stderr: str
    ) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited with {returncode}"
        detail = (stderr.strip() or stdout.strip())[-8000:]
        super().__init__(f"`{' '.join(self.command)}` {status}:\n{detail}")


def find_terraform() -> str | None:
    """Return the terraform executable (``$TERRAFORM_BIN`` or PATH), or None."""
    return shutil.which(os.environ.get(TERRAFORM_BIN_ENV, "terraform"))


def _holds_aws_provider(directory: Path) -> bool:
    return directory.is_dir() and any(directory.glob(PROVIDER_BINARY_GLOB))


def find_plugin_dir() -> Path | None:
    """Find a local provider mirror holding ``terraform-provider-aws``.

    ``$TF_PLUGIN_DIR`` wins when set (None if it holds no AWS provider); otherwise
    ``/opt/tf-plugins``, the user and system plugin directories and the plugin cache
    are searched. Returns None when terraform would have to download the provider.
    """
    configured = os.environ.get(PLUGIN_DIR_ENV)
    if configured:
        path = Path(configured).expanduser()
        return path if _holds_aws_provider(path) else None

    data_home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    candidates = [
        Path("/opt/tf-plugins"),
        Path.home() / ".terraform.d" / "plugins",
        data_home / "terraform" / "plugins",
        Path("/usr/local/share/terraform/plugins"),
        Path("/usr/share/terraform/plugins"),
    ]
    if cache := os.environ.get("TF_PLUGIN_CACHE_DIR"):
        candidates.append(Path(cache).expanduser())
    return next((path for path in candidates if _holds_aws_provider(path)), None)


def moto_override_hcl(endpoint_url: str, services: Sequence[str] = MOTO_SERVICES) -> str:
    """Return the HCL of an override file pointing the aws provider at moto."""
    width = max(len(service) for service in services)
    endpoints = "\n".join(f'    {service.ljust(width)} = "{endpoint_url}"' for service in services)
    return f"""# Generated by aws_lambda/sandbox/terraform.py for moto. Do not commit.
provider "aws" {{
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true

  endpoints {{
{endpoints}
  }}
}}
{_MOTO_RESOURCE_OVERRIDES}"""


def endpoint_output_hcl(endpoint_url: str) -> str:
    """Return the HCL of an ``endpoint_url`` output naming the moto server."""
    return f"""# Generated by aws_lambda/sandbox/terraform.py for moto. Do not commit.
output "{ENDPOINT_OUTPUT}" {{
  description = "The moto server this copy of the stack lives in: give it to every client."
  value       = "{endpoint_url}"
}}
"""


def write_dummy_lambda_zip(path: Path) -> Path:
    """Write a tiny Lambda zip (``aws_lambda/handler.py``) to ``path`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("aws_lambda/__init__.py", "")
        archive.writestr(
            "aws_lambda/handler.py",
            "def lambda_handler(event, context):\n    return {'batchItemFailures': []}\n",
        )
    return path


def _is_stack_file(name: str) -> bool:
    """Tell whether ``name`` is a configuration or lock file (not an override)."""
    if name == ".terraform.lock.hcl":
        return True
    stem = name.removesuffix(".json").removesuffix(".tf")
    is_override = stem == "override" or stem.endswith("_override")
    return name.endswith((".tf", ".tf.json")) and not is_override


class TerraformStack:
    """One Terraform working directory, usually a throw-away copy of a stack.

    Every command runs the real binary with ``-input=false -no-color`` and raises
    :class:`TerraformError` (with stderr) on failure. Variables given to :meth:`apply`
    are written to a JSON var-file and reused by :meth:`plan_has_changes` and
    :meth:`destroy`.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        plugin_dir: Path | None = None,
        terraform_bin: str | None = None,
        timeout: float = 900.0,
        owns_work_dir: bool = False,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()  # terraform runs in it: relative paths break
        self.plugin_dir = plugin_dir if plugin_dir is not None else find_plugin_dir()
        binary = terraform_bin or find_terraform()
        if binary is None:
            raise FileNotFoundError(
                "terraform executable not found (set TERRAFORM_BIN or add it to PATH)"
            )
        self.terraform_bin = binary
        self.timeout = timeout
        self._owns_work_dir = owns_work_dir
        self._is_copy = False
        self._moto = False
        self._vars: dict[str, Any] = {}

    @classmethod
    def copy_of(
        cls, source_dir: Path, dest_dir: Path | None = None, **kwargs: Any
    ) -> TerraformStack:
        """Copy the stack's top-level ``*.tf``/``*.tf.json`` files and lock file.

        Override files, state and ``.terraform/`` are not copied. Without ``dest_dir``
        a temporary directory is created and removed again by :meth:`cleanup`.
        """
        source = Path(source_dir)
        if not any(source.glob("*.tf")):
            raise FileNotFoundError(f"no *.tf files in {source}")
        owns = dest_dir is None
        target = Path(tempfile.mkdtemp(prefix="tfstack-")) if dest_dir is None else Path(dest_dir)
        target.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file() and _is_stack_file(item.name):
                shutil.copy2(item, target / item.name)
        stack = cls(target, owns_work_dir=owns, **kwargs)
        stack._is_copy = True
        return stack

    def __enter__(self) -> TerraformStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the working directory if this object created it."""
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- configuration -----------------------------------------------------------

    def with_moto_endpoints(
        self, endpoint_url: str, services: Sequence[str] = MOTO_SERVICES
    ) -> Path:
        """Write ``moto_override.tf`` sending every provider call to ``endpoint_url``.

        Only allowed on a stack made by :meth:`copy_of`, so a repository stack is never
        modified. Returns the path of the override file.
        """
        if not self._is_copy:
            raise ValueError(
                f"refusing to write an override into {self.work_dir}: use TerraformStack.copy_of()"
            )
        path = self.work_dir / OVERRIDE_FILE_NAME
        path.write_text(moto_override_hcl(endpoint_url.rstrip("/"), services), encoding="utf-8")
        self._moto = True
        return path

    def with_endpoint_output(self, endpoint_url: str) -> Path:
        """Write ``moto_outputs.tf``: an ``endpoint_url`` output, so that ``terraform output``
        (and ``adder ... --stack``) tells clients where the stack lives. Copies only."""
        if not self._is_copy:
            raise ValueError(
                f"refusing to add an output to {self.work_dir}: use TerraformStack.copy_of()"
            )
        path = self.work_dir / ENDPOINT_OUTPUT_FILE_NAME
        path.write_text(endpoint_output_hcl(endpoint_url.rstrip("/")), encoding="utf-8")
        return path

    # -- commands ----------------------------------------------------------------

    def init(self, *, backend: bool = True) -> None:
        """Run ``terraform init``, offline via ``-plugin-dir`` when a mirror exists."""
        args = ["init", "-input=false", "-no-color"]
        if self.plugin_dir is not None:
            args.append(f"-plugin-dir={self.plugin_dir}")
        if not backend:
            args.append("-backend=false")
        self._run(args)

    def validate(self) -> dict[str, Any]:
        """Run ``terraform validate -json``; raise unless the configuration is valid."""
        result = self._run(["validate", "-json", "-no-color"], check=False)
        report: dict[str, Any] = json.loads(result.stdout or "{}")
        if result.returncode != 0 or not report.get("valid", False):
            messages = [
                d.get("summary", "") + ": " + d.get("detail", "")
                for d in report.get("diagnostics", [])
            ]
            raise TerraformError(
                result.args,
                result.returncode,
                result.stdout,
                "\n".join(messages) or result.stderr,
            )
        return report

    def fmt_check(self) -> None:
        """Run ``terraform fmt -check``; raise listing the unformatted files."""
        self._run(["fmt", "-check", "-list=true", "-no-color"])

    def apply(self, vars: Mapping[str, Any] | None = None) -> None:
        """Run ``terraform apply -auto-approve`` (``vars`` kept for plan, destroy)."""
        if vars is not None:
            self._vars = dict(vars)
        self._run(
            [
                "apply",
                "-auto-approve",
                "-input=false",
                "-no-color",
                *self._var_file_args(),
            ]
        )

    def plan_has_changes(self, vars: Mapping[str, Any] | None = None) -> bool:
        """Run ``terraform plan -detailed-exitcode``; True when changes are pending."""
        if vars is not None:
            self._vars = dict(vars)
        args = [
            "plan",
            "-detailed-exitcode",
            "-input=false",
            "-no-color",
            *self._var_file_args(),
        ]
        result = self._run(args, check=False)
        if result.returncode not in (0, 2):
            raise TerraformError(result.args, result.returncode, result.stdout, result.stderr)
        return result.returncode == 2

    def plan_json(self, vars: Mapping[str, Any]) -> dict[str, Any]:
        """Run ``terraform plan`` with ``vars`` (not kept: apply and destroy still use their
        own) and return the plan as ``terraform show -json`` gives it."""
        var_file = self.work_dir / PLAN_VARS_FILE_NAME
        plan_file = self.work_dir / PLAN_FILE_NAME
        var_file.write_text(json.dumps(dict(vars), indent=2, default=str), encoding="utf-8")
        try:
            self._run(
                [
                    "plan",
                    "-input=false",
                    "-no-color",
                    f"-out={plan_file}",
                    f"-var-file={var_file}",
                ]
            )
            result = self._run(["show", "-json", "-no-color", str(plan_file)])
        finally:
            plan_file.unlink(missing_ok=True)
            var_file.unlink(missing_ok=True)
        plan: dict[str, Any] = json.loads(result.stdout)
        return plan

    def output(self) -> dict[str, Any]:
        """Return ``terraform output -json`` as ``{name: value}``."""
        result = self._run(["output", "-json", "-no-color"])
        raw: dict[str, dict[str, Any]] = json.loads(result.stdout or "{}")
        return {name: entry.get("value") for name, entry in raw.items()}

    def destroy(self, vars: Mapping[str, Any] | None = None) -> None:
        """Run ``terraform destroy -auto-approve`` with the last apply's variables."""
        if vars is not None:
            self._vars = dict(vars)
        self._run(
            [
                "destroy",
                "-auto-approve",
                "-input=false",
                "-no-color",
                *self._var_file_args(),
            ]
        )

    # -- helpers -----------------------------------------------------------------

    def _var_file_args(self) -> list[str]:
        if not self._vars:
            return []
        path = self.work_dir / VARS_FILE_NAME
        path.write_text(json.dumps(self._vars, indent=2, default=str), encoding="utf-8")
        return [f"-var-file={path}"]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"TF_IN_AUTOMATION": "1", "TF_INPUT": "0", "CHECKPOINT_DISABLE": "1"})
        cli_config = env.get("TF_CLI_CONFIG_FILE")
        if cli_config and not Path(cli_config).is_file():
            # A dangling TF_CLI_CONFIG_FILE only produces a warning on every command.
            del env["TF_CLI_CONFIG_FILE"]
        if self._moto:
            # Belt and braces: nothing a moto run does may pick up real credentials.
            for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
                env.pop(name, None)
            env.update({"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"})
        return env

    def _run(self, args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [self.terraform_bin, *args]
        try:
            result = subprocess.run(
                command,
                cwd=self.work_dir,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stdout = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
            raise TerraformError(command, None, stdout, stderr) from exc
        if check and result.returncode != 0:
            raise TerraformError(command, result.returncode, result.stdout, result.stderr)
        return result
