"""The Google Cloud job backend on real parts: the Pub/Sub emulator (gcloud) and
gcp-storage-emulator, through the real google-cloud-pubsub and google-cloud-storage clients.

``TestGcpJobBackend`` runs the shared backend contract; the rest checks what is Google's
own: ``open_backend`` building only what a command needs, full and bare names, the
dead-letter count on the emulator (pull and hand back), and unreachable endpoints.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from core.errors import ConfigError
from core.ops.target import Target
from gcp_function.job_backend import GcpJobBackend
from gcp_function.jobs import Clients, open_backend
from tests.integration.gcp.conftest import PROJECT, storage_client, storage_emulator, unique
from tests.job_backend_contract import TASK, JobBackendContract, receive_all
from tools.servers import free_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.integration.gcp.conftest import PubsubAdmin

pytestmark = pytest.mark.integration

PREFIX = "jobs/run-1"


@dataclass
class Job:
    """One job's resources on the emulators."""

    topic: str
    tap: str
    """A pull subscription of the task topic: what the tests read back as "queued"."""
    dead_topic: str
    dead_subscription: str
    bucket: str

    def settings(self, **changes: str) -> dict[str, str]:
        """The job's settings as a Target holds them."""
        values = {
            "topic": self.topic,
            "dead_letter_subscription": self.dead_subscription,
            "bucket": self.bucket,
            "prefix": PREFIX,
        }
        return {**values, **changes}


@pytest.fixture(scope="module")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A storage emulator of this module's own: it rewrites its whole index on every write,
    so the contract's 1005 objects would slow every later write of the session's one."""
    with storage_emulator(tmp_path_factory.mktemp("jobs-gcs-emulator")) as url:
        yield url


@pytest.fixture(scope="module")
def gcs_client(gcs_emulator: str) -> Any:
    return storage_client(gcs_emulator)


@pytest.fixture
def job(pubsub_admin: PubsubAdmin, gcs_client: Any) -> Job:
    topic = pubsub_admin.topic(unique("tasks"))
    dead_topic = pubsub_admin.topic(unique("dead"))
    return Job(
        topic=topic,
        tap=pubsub_admin.subscription(unique("tap"), topic),
        dead_topic=dead_topic,
        dead_subscription=pubsub_admin.subscription(unique("dead-sub"), dead_topic),
        bucket=gcs_client.create_bucket(unique("results")).name,
    )


def emulator_backend(emulator_env: dict[str, str], gcs_client: Any, **names: str) -> GcpJobBackend:
    """A backend with every client, built by the module's own ``Clients`` for the emulators."""
    clients = Clients(
        PROJECT, emulator_env["PUBSUB_EMULATOR_HOST"], emulator_env["STORAGE_EMULATOR_HOST"]
    )
    return GcpJobBackend(
        topic=names["topic"],
        dead_letter_subscription=names["dead_letter_subscription"],
        bucket=names["bucket"],
        prefix=PREFIX,
        publisher=clients.publisher(),
        subscriber=clients.subscriber(),
        storage=gcs_client,
    )


class TestGcpJobBackend(JobBackendContract):
    """The shared contract, on the Pub/Sub emulator and gcp-storage-emulator."""

    @pytest.fixture
    def backend(
        self, job: Job, emulator_env: dict[str, str], gcs_client: Any
    ) -> Iterator[GcpJobBackend]:
        backend = emulator_backend(emulator_env, gcs_client, **job.settings())
        yield backend
        backend.close()

    @pytest.fixture
    def queued(self, job: Job, pubsub_admin: PubsubAdmin) -> Callable[[], list[bytes]]:
        return lambda: pubsub_admin.drain(job.tap)

    @pytest.fixture
    def plant_record(self, job: Job, gcs_client: Any) -> Callable[[str, bytes], None]:
        def plant(file_name: str, data: bytes) -> None:
            gcs_client.bucket(job.bucket).blob(f"{PREFIX}/{file_name}").upload_from_string(data)

        return plant

    @pytest.fixture
    def plant_dead_letter(self, job: Job, pubsub_admin: PubsubAdmin) -> Callable[[bytes], None]:
        return lambda body: pubsub_admin.publish(job.dead_topic, body)

    @pytest.fixture
    def missing_backend(
        self, emulator_env: dict[str, str], gcs_client: Any
    ) -> Iterator[GcpJobBackend]:
        backend = emulator_backend(
            emulator_env,
            gcs_client,
            topic=f"projects/{PROJECT}/topics/{unique('no-such-topic')}",
            dead_letter_subscription=f"projects/{PROJECT}/subscriptions/{unique('no-such')}",
            bucket=unique("no-such-bucket"),
        )
        yield backend
        backend.close()


def test_the_emulator_lists_md5_which_is_given_as_hex(
    job: Job, emulator_env: dict[str, str], gcs_client: Any
) -> None:
    # GIVEN a result in the bucket
    gcs_client.bucket(job.bucket).blob(f"{PREFIX}/a.out").upload_from_string(b"100")
    backend = emulator_backend(emulator_env, gcs_client, **job.settings())
    # WHEN it is listed / THEN the listing's base64 MD5 is given as hex
    [record] = list(backend.list_records())
    backend.close()
    assert record.md5 == hashlib.md5(b"100").hexdigest()


def test_dead_letters_are_counted_on_the_emulator_and_all_stay_there(
    job: Job, emulator_env: dict[str, str], gcs_client: Any, pubsub_admin: PubsubAdmin
) -> None:
    # GIVEN 3 dead letters (the emulator has no Cloud Monitoring)
    pubsub_admin.publish(job.dead_topic, TASK, b"x", b"y")
    backend = emulator_backend(emulator_env, gcs_client, **job.settings())
    # WHEN they are counted, twice
    counts = [backend.dead_letter_count(), backend.dead_letter_count()]
    # THEN both counts are exact, and counting took none away: all 3 can still be received
    assert counts == [3, 3]
    letters = receive_all(backend, 3)
    assert sorted(letter.body for letter in letters) == sorted([TASK, b"x", b"y"])
    backend.delete_dead_letters(letters)
    assert backend.dead_letter_count() == 0
    backend.close()


def test_without_a_dead_letter_subscription_the_count_is_unknown(
    job: Job, emulator_env: dict[str, str]
) -> None:
    backend = open_backend(Target("gcp", {"bucket": job.bucket}), "status")
    assert backend.dead_letter_count() is None
    backend.close()


def test_open_backend_builds_only_what_the_command_needs_from_bare_names(
    job: Job, emulator_env: dict[str, str], pubsub_admin: PubsubAdmin
) -> None:
    # GIVEN bare topic and subscription names and the project
    bare = job.settings(
        project=PROJECT,
        topic=job.topic.rsplit("/", 1)[1],
        dead_letter_subscription=job.dead_subscription.rsplit("/", 1)[1],
    )
    target = Target("gcp", bare)
    # WHEN each command opens its backend
    submit = open_backend(target, "submit")
    redrive = open_backend(target, "redrive")
    fetch = open_backend(target, "fetch")
    # THEN submit has a publisher only, on the full topic path, and it publishes
    assert isinstance(submit, GcpJobBackend)
    assert (submit.topic, submit.subscriber, submit.storage) == (job.topic, None, None)
    assert submit.queue_label == f"Pub/Sub topic {job.topic}"
    assert submit.send_batch([TASK]) == []
    assert pubsub_admin.drain(job.tap) == [TASK]
    # AND redrive has the publisher and the dead-letter subscriber, no storage
    assert isinstance(redrive, GcpJobBackend)
    assert redrive.dead_letter_subscription == job.dead_subscription
    assert redrive.publisher is not None and redrive.storage is None
    # AND fetch has storage only, and names the results
    assert isinstance(fetch, GcpJobBackend)
    assert (fetch.publisher, fetch.subscriber) == (None, None)
    assert fetch.results_label == f"gs://{job.bucket}/{PREFIX}/"
    assert list(fetch.list_records()) == []
    for backend in (submit, redrive, fetch):
        backend.close()


def test_submit_to_a_missing_topic_fails_when_opened(emulator_env: dict[str, str]) -> None:
    target = Target("gcp", {"topic": f"projects/{PROJECT}/topics/{unique('gone')}"})
    with pytest.raises(ConfigError) as raised:
        open_backend(target, "submit")
    host = emulator_env["PUBSUB_EMULATOR_HOST"]
    assert str(raised.value).startswith(
        f"Pub/Sub topic {target.get('topic')} at {host} does not exist ("
    )
    assert str(raised.value).endswith(
        "): check --topic, --stack DIR (terraform output topic_id) or --config FILE (queue_name) "
        "(and the project and $PUBSUB_EMULATOR_HOST)"
    )


def test_unreachable_pubsub_is_a_config_error_at_once(
    emulator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an emulator address where nothing listens
    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", closed)
    target = Target("gcp", {"topic": f"projects/{PROJECT}/topics/adder-tasks"})
    # WHEN a submit opens its backend / THEN one line names the address
    with pytest.raises(ConfigError) as raised:
        open_backend(target, "submit")
    assert str(raised.value).startswith(
        f"cannot reach Pub/Sub topic projects/{PROJECT}/topics/adder-tasks at {closed} ("
    )
    assert str(raised.value).endswith("$PUBSUB_EMULATOR_HOST), and the network")
    assert "\n" not in str(raised.value)


def test_unreachable_storage_is_a_config_error_at_once(
    emulator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", closed)
    backend = open_backend(Target("gcp", {"bucket": "adder-results"}), "fetch")
    with pytest.raises(ConfigError) as raised:
        list(backend.list_records())
    backend.close()
    assert str(raised.value).startswith(f"cannot reach bucket gs://adder-results at {closed} (")
    assert str(raised.value).endswith(
        "check --bucket, --stack DIR (terraform output results_bucket) or --config FILE"
        " (result_bucket) "
        "(and $STORAGE_EMULATOR_HOST), and the network"
    )
    assert "\n" not in str(raised.value)
