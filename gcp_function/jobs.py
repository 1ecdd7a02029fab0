"""``adder submit|watch|fetch|redrive|status gcp``: the settings of a Google Cloud job (Pub/Sub
topic, dead-letter subscription, results bucket) and :func:`open_backend`, which builds the
Google clients a command needs and hands them to :class:`~gcp_function.job_backend.GcpJobBackend`.

``PUBSUB_EMULATOR_HOST`` and ``STORAGE_EMULATOR_HOST`` point the clients at local emulators
(anonymous credentials). Importing this module imports no SDK (nor the backend): both are
imported when a backend is opened.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import TYPE_CHECKING, Any

from core.clouds import CLOUDS
from core.errors import AdderError, ConfigError, ProviderUnavailableError
from core.ops.target import Setting

if TYPE_CHECKING:
    from collections.abc import Callable

    from core.ops.backend import JobBackend
    from core.ops.target import Target

SETTINGS = (
    Setting(
        "project",
        "the Google Cloud project ($GOOGLE_CLOUD_PROJECT)",
        output="project_id",
        config="config.project",
        env=("GOOGLE_CLOUD_PROJECT",),
    ),
    Setting(
        "topic",
        "the task topic: projects/P/topics/T, or T with the project",
        output="topic_id",
        config="queue_name",
    ),
    Setting(
        "dead_letter_subscription",
        "the dead-letter subscription: projects/P/subscriptions/S, or S with the project",
        output="dead_letter_subscription",
        config="config.dead_letter_subscription",
    ),
    Setting("bucket", "the results bucket", output="results_bucket", config="result_bucket"),
    Setting("prefix", "the results prefix", output="results_prefix", config="result_prefix"),
)

NEEDS = {
    "submit": ("topic",),
    "redrive": ("topic", "dead_letter_subscription"),
    "watch": ("bucket",),
    "fetch": ("bucket",),
    "status": ("bucket",),
}
"""The settings each command cannot do without."""

INSTALL_HINT = CLOUDS["gcp"].install_hint
PUBLISH_MAX_MESSAGES = 1000
"""Messages per publish request: the Pub/Sub API's own maximum (the library default is 100).
Tasks are ~100 bytes, so a full request is about 100 KB: one request per thousand tasks."""
PUBLISH_MAX_BYTES = 5_000_000
"""Bytes per publish request: half the API's 10 MB limit, reached first only by large tasks."""
PUBLISH_MAX_LATENCY = 0.1
"""Seconds a request waits to fill. A batch of the driver is handed over at once, so requests
fill by count; only a partial one waits, once."""

FULL_NAME = re.compile(
    r"^projects/(?P<project>[^/]+)/(?P<kind>topics|subscriptions)/(?P<name>[^/]+)$"
)
BARE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")


def ways(setting: str) -> str:
    """Every way to give ``setting`` (:meth:`core.ops.target.Setting.ways`), for a line that
    says it is missing or wrong."""
    return next(s for s in SETTINGS if s.name == setting).ways(environment=False)


def full_name(kind: str, value: str, project: str | None, setting: str) -> str:
    """``projects/P/{kind}/NAME`` from a full path, or a bare name and the project."""
    match = FULL_NAME.match(value)
    if match is not None:
        if match["kind"] != kind:
            raise ConfigError(f"{Setting(setting, '').flag} {value!r} is not a {kind[:-1]} path")
        return value
    if "/" in value or not BARE_NAME.match(value):
        raise ConfigError(
            f"{Setting(setting, '').flag} {value!r}: give projects/PROJECT/{kind}/NAME, or a "
            f"{kind[:-1]} name (3-255 letters, digits and -._~%+, starting with a letter)"
        )
    if not project:
        raise ConfigError(
            f"the bare {kind[:-1]} name {value!r} needs the project: give --project, "
            f"--stack DIR (terraform output project_id), --config FILE (config.project) or "
            f"$GOOGLE_CLOUD_PROJECT, or the full projects/PROJECT/{kind}/{value}"
        )
    return f"projects/{project}/{kind}/{value}"


def open_backend(target: Target, command: str) -> JobBackend:
    """The Pub/Sub + Cloud Storage backend of ``target`` (Google clients imported here).

    Builds only the clients ``command`` uses, once, with one set of credentials
    (application-default; anonymous on emulators: ``PUBSUB_EMULATOR_HOST``,
    ``STORAGE_EMULATOR_HOST``). Before a submit or a redrive it checks that the topic exists.
    """
    from gcp_function.job_backend import GcpJobBackend

    for name in NEEDS.get(command, ("bucket",)):
        target.require(name, SETTINGS, f"adder {command} gcp")
    project = target.get("project")
    sends = command in ("submit", "redrive")
    topic = target.get("topic")
    if topic and sends:
        topic = full_name("topics", topic, project, "topic")
    elif topic:  # only named in status lines: as given when it cannot be completed
        with contextlib.suppress(ConfigError):
            topic = full_name("topics", topic, project, "topic")
    subscription = target.get("dead_letter_subscription")
    if subscription and command in ("redrive", "watch", "status"):
        subscription = full_name("subscriptions", subscription, project, "dead_letter_subscription")
    else:
        subscription = None
    bucket = target.get("bucket") if command in ("watch", "fetch", "status") else None
    pubsub_emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    clients = Clients(project, pubsub_emulator, os.environ.get("STORAGE_EMULATOR_HOST"))
    # Dead letters are pulled by a redrive, and counted by pulling on the emulator only
    # (on Google Cloud, Cloud Monitoring counts them: no subscriber, no pull permission).
    pulls = subscription is not None and (command == "redrive" or bool(pubsub_emulator))
    backend = GcpJobBackend(
        topic=topic,
        dead_letter_subscription=subscription,
        bucket=bucket,
        prefix=target.get("prefix") or "",
        publisher=clients.publisher() if sends else None,
        subscriber=clients.subscriber() if pulls else None,
        storage=clients.storage() if bucket else None,
        on_emulator=bool(pubsub_emulator),
        monitoring_session=clients.monitoring_session,
        owns_storage=True,
    )
    if sends:
        try:
            backend.check_topic()
        except AdderError:
            backend.close()
            raise
    return backend


class Clients:
    """The Google clients of one command, sharing one set of credentials.

    ``pubsub`` and ``storage`` are emulator addresses (``PUBSUB_EMULATOR_HOST``,
    ``STORAGE_EMULATOR_HOST``), or None for Google's endpoints with application-default
    credentials. (The Pub/Sub clients read ``PUBSUB_EMULATOR_HOST`` themselves.)
    """

    def __init__(self, project: str | None, pubsub: str | None, storage: str | None) -> None:
        self.project = project
        self.pubsub_emulator = pubsub
        self.storage_emulator = storage
        self._credentials: Any = None

    def _sdk(self, module: str) -> Any:
        import importlib

        try:
            return importlib.import_module(module)
        except ImportError:
            raise ProviderUnavailableError(f"{module} is not installed: {INSTALL_HINT}") from None

    def credentials(self) -> Any:
        """Application-default credentials, found once (ConfigError when there are none)."""
        if self._credentials is None:
            google_auth = self._sdk("google.auth")
            self._credentials, _ = self._build(
                lambda: google_auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
            )
        return self._credentials

    def publisher(self) -> Any:
        """A ``PublisherClient`` with the batch settings of this module."""
        pubsub_v1 = self._sdk("google.cloud.pubsub_v1")
        settings = pubsub_v1.types.BatchSettings(
            max_messages=PUBLISH_MAX_MESSAGES,
            max_bytes=PUBLISH_MAX_BYTES,
            max_latency=PUBLISH_MAX_LATENCY,
        )
        credentials = None if self.pubsub_emulator else self.credentials()
        return self._build(
            lambda: pubsub_v1.PublisherClient(batch_settings=settings, credentials=credentials)
        )

    def subscriber(self) -> Any:
        """A ``SubscriberClient`` (for the dead-letter subscription)."""
        pubsub_v1 = self._sdk("google.cloud.pubsub_v1")
        credentials = None if self.pubsub_emulator else self.credentials()
        return self._build(lambda: pubsub_v1.SubscriberClient(credentials=credentials))

    def storage(self) -> Any:
        """A ``storage.Client``, anonymous on the emulator."""
        storage = self._sdk("google.cloud.storage")
        if self.storage_emulator:
            anonymous = self._sdk("google.auth.credentials").AnonymousCredentials()
            return self._build(
                lambda: storage.Client(
                    project=self.project or "emulator",
                    credentials=anonymous,
                    client_options={"api_endpoint": self.storage_emulator},
                )
            )
        credentials = self.credentials()
        return self._build(lambda: storage.Client(project=self.project, credentials=credentials))

    def monitoring_session(self) -> Any:
        """An authorized ``requests`` session for Cloud Monitoring (not on the emulator)."""
        transport = self._sdk("google.auth.transport.requests")
        return transport.AuthorizedSession(self.credentials())

    @staticmethod
    def _build(make: Callable[[], Any]) -> Any:
        from gcp_function.job_errors import CREDENTIALS, translate_error

        try:
            return make()
        except Exception as exc:
            raise translate_error(exc, CREDENTIALS) from None
