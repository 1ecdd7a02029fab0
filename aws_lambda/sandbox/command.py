"""``adder sandbox aws``: the AWS stack on this machine, to try the whole job flow locally.

It starts the project's moto server on 127.0.0.1, builds the Lambda zip, applies a copy of
``infra/aws`` to the server (terraform, with the moto endpoint override and an
``endpoint_url`` output), then runs the zip's handler the way the SQS event source mapping
does until Ctrl-C: receive a batch, invoke, delete what did not fail; failures come back after
the visibility timeout and go to the dead-letter queue after ``max_receive_count`` receives.
Meanwhile ``adder submit|watch|fetch|redrive|status aws --stack DIR`` work against it from
another terminal. Importing this module imports neither boto3 nor moto.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from core.errors import ConfigError, ProviderUnavailableError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from aws_lambda.sandbox.esm import EventSourceMapping
    from aws_lambda.sandbox.runtime import ZipRuntime
    from core.clouds import Cloud

DEFAULT_PORT = 4566
DEFAULT_DIR = Path(".adder") / "sandbox" / "aws"
REGION = "us-east-1"
DUMMY_KEY = "testing"
MARKER = ".adder-sandbox"
"""A file that marks a directory as the sandbox's own: only such a directory is ever cleared."""
FAIL_WRITES = "fail-writes"
"""While this file of the state directory holds a regular expression, the function's writes
of matching keys fail (see :mod:`aws_lambda.sandbox.runtime`)."""
SANDBOX_VARS: dict[str, Any] = {
    "region": REGION,
    "name": "adder-sandbox",
    "function_timeout_seconds": 5,
    "max_receive_count": 2,
    "force_destroy": True,
    # moto would try to run the function in Docker on every send: the sandbox is the mapping.
    "event_source_mapping_enabled": False,
}
"""The stack's variables in the sandbox (``--var NAME=VALUE`` overrides): a 5 s function
timeout gives a 30 s visibility timeout, so a failing task is dead-lettered within a minute."""
SERVER_START_SECONDS = 30.0
POLL_SECONDS = 0.5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DESCRIPTION = """\
Try the AWS stack on this machine: start a moto server on 127.0.0.1:PORT, apply a copy of
infra/aws to it with terraform (state in DIR), and run the packaged Lambda handler the way the
SQS event source mapping does, until Ctrl-C. Once it prints "ready", run adder submit, watch,
fetch, redrive and status with --stack DIR from another terminal."""

EPILOG = """\
Needs: terraform on PATH (or $TERRAFORM_BIN) and the hashicorp/aws provider, from a filesystem
mirror ($TF_PLUGIN_DIR, /opt/tf-plugins, ~/.terraform.d/plugins) or the registry (online);
moto and boto3: pip install 'adder-tasks[sandbox]'.
Everything lives in the server's memory: stopping the sandbox forgets the queues, the bucket
and the results, and removes DIR (--keep keeps it, with moto.log, terraform.log and
function.log). To see retries, the dead-letter queue and redrive: write a regular expression
to DIR/fail-writes; the function's writes of matching keys fail until the file is removed
(with --var results_layout=packed: the batch whose pack holds a matching key).
Exit codes: 0 stopped by --exit-after-idle, 1 the server or the function died, 2 setup failed
(one line on stderr), 130 Ctrl-C, 143 SIGTERM."""


def register_sandbox_command(group: argparse._SubParsersAction[Any], cloud: Cloud) -> None:
    """Add ``adder sandbox aws`` to the ``sandbox`` command's subparsers."""
    parser = group.add_parser(
        cloud.name,
        help=f"run the {cloud.title} stack locally (moto + terraform + the packaged handler)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the moto server's port on 127.0.0.1 (default {DEFAULT_PORT}; 0 = any free port)",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_DIR,
        help=f"the sandbox's stack copy, state and logs (default {DEFAULT_DIR})",
    )
    parser.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a variable of infra/aws (repeatable; VALUE is JSON when it parses as JSON)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep DIR (state and logs) when the sandbox stops"
    )
    parser.add_argument(
        "--exit-after-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop (exit 0) once the task queue has been empty this long (default: run until "
        "Ctrl-C)",
    )
    parser.set_defaults(handler=run_sandbox, cloud=cloud.name)


def run_sandbox(args: argparse.Namespace) -> int:
    """The ``adder sandbox aws`` command."""
    variables = {**SANDBOX_VARS, **parse_vars(args.var)}
    _check_prerequisites()
    from aws_lambda.sandbox.terraform import find_plugin_dir, find_terraform

    terraform = find_terraform()
    if terraform is None:
        raise ConfigError(
            "adder sandbox aws needs terraform: install it "
            "(https://developer.hashicorp.com/terraform/install) or set TERRAFORM_BIN"
        )
    infra = _infra_dir()
    port = _usable_port(args.port)
    directory: Path = args.dir
    _prepare_dir(directory)
    endpoint = f"http://127.0.0.1:{port}"
    sandbox = Sandbox(directory, endpoint, keep=args.keep)
    code = 1
    try:
        with sandbox.moto_server(port):
            sandbox.apply(infra, terraform, find_plugin_dir(), variables)
            with sandbox.function() as runtime:
                mapping = sandbox.mapping(runtime)
                print(ready_text(directory, endpoint), flush=True)
                code = sandbox.serve(mapping, args.exit_after_idle)
                return code
    except KeyboardInterrupt:
        print("adder sandbox aws: interrupted; stopped", file=sys.stderr)
        code = EXIT_INTERRUPTED
        return code
    finally:
        sandbox.cleanup(failed=code not in (0, EXIT_INTERRUPTED, EXIT_TERMINATED))


def parse_vars(items: list[str]) -> dict[str, Any]:
    """``NAME=VALUE`` pairs as terraform variables (VALUE as JSON when it is JSON)."""
    import json

    variables: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--var {item!r}: give NAME=VALUE, e.g. --var max_receive_count=3")
        try:
            variables[name.strip()] = json.loads(value)
        except ValueError:
            variables[name.strip()] = value
    return variables


def _check_prerequisites() -> None:
    missing = [
        name
        for name in ("boto3", "moto", "flask", "flask_cors")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ProviderUnavailableError(
            f"adder sandbox aws needs moto's server and boto3 ({', '.join(missing)} missing): "
            "pip install 'adder-tasks[sandbox]'"
        )


def _infra_dir() -> Path:
    from core.packaging import project_root

    for candidate in (project_root() / "infra" / "aws", Path("infra") / "aws"):
        if (candidate / "main.tf").is_file():
            return candidate
    raise ConfigError(
        "adder sandbox aws needs the infra/aws stack: run it from a clone of the repository "
        "(pip install -e '.[sandbox]')"
    )


def _usable_port(port: int) -> int:
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: give a TCP port (1-65535), or 0 for any free one")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(
                f"port {port} on 127.0.0.1 is in use (another sandbox, LocalStack?): give "
                "--port N, or --port 0 for any free port"
            ) from None
        free: int = probe.getsockname()[1]
        return free


def _prepare_dir(directory: Path) -> None:
    """Make ``directory`` an empty sandbox directory (keeping terraform's ``.terraform``);
    refuse one that holds anything but an earlier sandbox's files."""
    if directory.exists():
        if not directory.is_dir():
            raise ConfigError(f"--dir {directory} is a file: give a directory")
        if any(directory.iterdir()) and not (directory / MARKER).is_file():
            raise ConfigError(
                f"--dir {directory} holds files that are not a sandbox's: give another --dir"
            )
        for item in directory.iterdir():
            if item.name == ".terraform":
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MARKER).write_text(
            "created by adder sandbox aws; removed when the sandbox stops\n", encoding="utf-8"
        )
    except OSError as exc:
        raise ConfigError(f"cannot create --dir {directory}: {exc.strerror or exc}") from None


def ready_text(directory: Path, endpoint: str) -> str:
    """What to run in another terminal, once the sandbox is ready."""
    stack = shlex.quote(str(directory))
    fail = shlex.quote(str(directory / FAIL_WRITES))
    return f"""\
adder sandbox aws: ready: moto at {endpoint}, stack in {directory}; Ctrl-C stops it.
In another terminal, in this directory:
  export AWS_ACCESS_KEY_ID={DUMMY_KEY} AWS_SECRET_ACCESS_KEY={DUMMY_KEY}
  adder submit aws --stack {stack} tasks.jsonl
  adder watch aws
  adder fetch aws --stack {stack} --into results
  adder redrive aws --stack {stack}
  adder status aws --stack {stack}
To see a task dead-lettered and redriven, make the function's writes of matching keys fail:
  echo 'TASK_ID' > {fail}
then submit and watch, remove that file, redrive and watch again."""


class Sandbox:
    """The processes and files of one sandbox run, stopped and removed in :meth:`cleanup`."""

    def __init__(self, directory: Path, endpoint: str, *, keep: bool) -> None:
        self.directory = directory
        self.endpoint = endpoint
        self.keep = keep
        self.outputs: dict[str, Any] = {}
        self.variables: dict[str, Any] = {}
        self.zip_path = directory / "aws_lambda.zip"
        self.function_timeout_ms = 30_000
        self._gone: Exception | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []
        self._session: Any = None

    def _log(self, name: str) -> IO[bytes]:
        log = (self.directory / name).open("ab")
        self._logs.append(log)
        return log

    def say(self, text: str) -> None:
        """One progress line on stdout."""
        print(f"adder sandbox aws: {text}", flush=True)

    @contextlib.contextmanager
    def moto_server(self, port: int) -> Iterator[None]:
        """Run the patched moto server until the block ends."""
        from aws_lambda.sandbox import moto_server

        self.say(f"starting moto at {self.endpoint} (log: {self.directory / 'moto.log'})")
        self._server = _spawn(
            moto_server.command(port),
            stdout=self._log("moto.log"),
            env={moto_server.PARENT_PID_ENV: str(os.getpid())},
        )
        try:
            _wait_until_up(f"{self.endpoint}/moto-api/", self._server, self.directory / "moto.log")
            yield
        finally:
            self.stop_server()

    def stop_server(self) -> None:
        """SIGTERM the server (SIGKILL after 10 s) and wait for it."""
        server, self._server = self._server, None
        if server is None or server.poll() is not None:
            return
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)

    def apply(
        self,
        infra: Path,
        terraform: str,
        plugin_dir: Path | None,
        variables: Mapping[str, Any],
    ) -> None:
        """Build the zip, then copy, init and apply the stack against the server."""
        from aws_lambda.sandbox.terraform import TerraformError, TerraformStack
        from core.clouds import CLOUDS
        from core.packaging import build_package

        self.variables = dict(variables)
        zip_path = build_package(CLOUDS["aws"], self.zip_path)
        source = f"the mirror {plugin_dir}" if plugin_dir else "the registry (online)"
        self.say(
            f"applying {infra} with terraform, provider from {source}; about a minute "
            f"(log: {self.directory / 'terraform.log'})"
        )
        stack = TerraformStack.copy_of(
            infra, self.directory, plugin_dir=plugin_dir, terraform_bin=terraform
        )
        stack.with_moto_endpoints(self.endpoint)
        stack.with_endpoint_output(self.endpoint)
        log = self._log("terraform.log")
        step = "init"
        try:
            stack.init()
            step = "apply"
            stack.apply({**variables, "lambda_zip_path": str(zip_path.resolve())})
            step = "output"
            self.outputs = stack.output()
        except TerraformError as exc:
            log.write(f"{exc}\n".encode())
            log.flush()
            raise ConfigError(_terraform_failure(step, exc, plugin_dir, log.name)) from None

    def _client(self, service: str) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.session.Session(
                aws_access_key_id=DUMMY_KEY,
                aws_secret_access_key=DUMMY_KEY,
                region_name=str(self.outputs.get("region") or REGION),
            )
        return self._session.client(service, endpoint_url=self.endpoint)

    @contextlib.contextmanager
    def function(self) -> Iterator[ZipRuntime]:
        """The deployed function's zip, handler and environment, in its own interpreter."""
        from aws_lambda.sandbox.runtime import RuntimeExitedError

        config = self._client("lambda").get_function_configuration(
            FunctionName=self.outputs["function_name"]
        )
        self.function_timeout_ms = int(config.get("Timeout", 30)) * 1000
        env = {
            **config.get("Environment", {}).get("Variables", {}),
            "AWS_ACCESS_KEY_ID": DUMMY_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
            "AWS_DEFAULT_REGION": str(self.outputs.get("region") or REGION),
            "AWS_REGION": str(self.outputs.get("region") or REGION),
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_LAMBDA_FUNCTION_NAME": config["FunctionName"],
        }
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)  # nothing in the sandbox may use real credentials
        try:
            runtime = self._start_function(config, env)
        except RuntimeExitedError as exc:
            raise ConfigError(f"{exc} at start: see {self.directory / 'function.log'}") from None
        try:
            yield runtime
        finally:
            runtime.close()

    def _start_function(self, config: Mapping[str, Any], env: dict[str, str]) -> ZipRuntime:
        from aws_lambda.sandbox.runtime import ZipRuntime

        runtime: ZipRuntime = _spawning(
            lambda: ZipRuntime(
                self.zip_path,
                config["Handler"],
                self.directory,
                env,
                stderr=self._log("function.log"),
                fail_writes=self.directory / FAIL_WRITES,
            )
        )
        return runtime

    def mapping(self, runtime: ZipRuntime) -> EventSourceMapping:
        """The stand-in for the stack's (disabled) event source mapping."""
        from aws_lambda.sandbox.esm import EventSourceMapping
        from aws_lambda.sandbox.runtime import RuntimeExitedError

        def invoke(event: Mapping[str, Any], context: Any) -> Any:
            try:
                return runtime.invoke(event, context.get_remaining_time_in_millis())
            except RuntimeExitedError as exc:
                self._gone = exc
                raise

        return EventSourceMapping(
            self._client("sqs"),
            self.outputs["queue_url"],
            invoke,
            batch_size=int(self.variables.get("batch_size") or 10),
            function_timeout_ms=self.function_timeout_ms,
        )

    def serve(self, mapping: EventSourceMapping, exit_after_idle: float | None) -> int:
        """Poll, invoke and delete until a signal (or ``exit_after_idle`` s of empty queue)."""
        from botocore.exceptions import BotoCoreError, ClientError

        stop = threading.Event()
        stopped_by: list[int] = []

        def on_signal(signum: int, _: Any) -> None:
            if stop.is_set():  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            stopped_by.append(signum)
            stop.set()

        previous = {
            signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
        }
        idle_since = time.monotonic()
        try:
            while not stop.is_set():
                before = (mapping.stats.deleted, mapping.stats.retried)
                try:
                    delivered = mapping.poll_once()
                except (BotoCoreError, ClientError) as exc:
                    if stop.is_set():
                        break
                    self.say(f"error: the moto server stopped answering: {_one_line(exc)}")
                    return 1
                if self._gone is not None:
                    self.say(f"error: {self._gone} (see {self.directory / 'function.log'})")
                    return 1
                if delivered:
                    done = mapping.stats.deleted - before[0]
                    retried = mapping.stats.retried - before[1]
                    self.say(
                        f"invoked {self.outputs['function_name']} with {_records(delivered)}: "
                        f"{done} done, {retried} back to the queue for retry"
                    )
                    idle_since = time.monotonic()
                    continue
                if exit_after_idle is not None and time.monotonic() - idle_since >= exit_after_idle:
                    if mapping.queue_is_empty():
                        self.say(f"the queue was empty for {exit_after_idle:g} s; stopping")
                        return 0
                    idle_since = time.monotonic()
                stop.wait(POLL_SECONDS)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        code = EXIT_TERMINATED if stopped_by and stopped_by[0] == signal.SIGTERM else 130
        print(
            f"adder sandbox aws: stopped after {mapping.stats.invocations} invocations "
            f"({mapping.stats.deleted} records done); the server's queues, bucket and results "
            "are gone",
            file=sys.stderr,
            flush=True,
        )
        return code

    def cleanup(self, *, failed: bool) -> None:
        """Stop the server, close the logs; remove the directory unless kept or ``failed``
        (its logs tell why)."""
        self.stop_server()
        for log in self._logs:
            log.close()
        if self.keep or failed:
            print(f"adder sandbox aws: kept {self.directory}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(self.directory, ignore_errors=True)


def _spawning(start: Any) -> Any:
    """Call ``start`` with SIGINT ignored, so the child started inherits that: Ctrl-C in the
    terminal reaches the whole foreground group, and the sandbox stops its children in order."""
    if threading.current_thread() is not threading.main_thread():
        return start()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return start()
    finally:
        signal.signal(signal.SIGINT, previous)


def _spawn(command: list[str], *, stdout: IO[bytes], env: Mapping[str, str]) -> Any:
    return _spawning(
        lambda: subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    )


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ConfigError(
                f"the moto server exited with code {process.returncode} at start: see {log}"
            )
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise ConfigError(
        f"the moto server did not answer within {SERVER_START_SECONDS:.0f} s: see {log}"
    )


def _terraform_failure(step: str, exc: Any, plugin_dir: Path | None, log: str) -> str:
    text = f"{exc.stderr}\n{exc.stdout}"
    errors = [line.strip() for line in text.splitlines() if line.strip().startswith("Error:")]
    first = errors[0] if errors else _one_line(text.strip() or str(exc))[:200]
    if step == "init" and plugin_dir is None:
        return (
            f"terraform init could not install the hashicorp/aws provider ({first}): go online, "
            f"or set TF_PLUGIN_DIR to a filesystem mirror of it (full output: {log})"
        )
    return f"terraform {step} against the sandbox failed: {first} (full output: {log})"


def _one_line(exc: object) -> str:
    return " ".join(str(exc).split())


def _records(count: int) -> str:
    return f"{count} record" if count == 1 else f"{count} records"
