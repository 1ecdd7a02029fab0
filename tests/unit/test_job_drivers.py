"""The job drivers of core/ops (submit, watch, fetch, redrive, status) on an in-memory backend
that subclasses the operator port: every outcome, without a cloud."""

from __future__ import annotations

import io
import json
import signal
import time
from typing import TYPE_CHECKING

import pytest

from core.errors import CloudUnavailableError, ConfigError
from core.local import main as run_locally
from core.ops.fetch import fetch
from core.ops.manifest import Manifest
from core.ops.redrive import redrive
from core.ops.status import status_lines
from core.ops.submit import submit
from core.ops.watch import EXIT_STILL_RUNNING, poll, watch
from core.pipeline import process_message, record_name
from tests.unit.fakes import InMemoryJobBackend, InMemoryResultStore

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


def task(i: int) -> bytes:
    return b'{"id": "t-%d", "data": {"num1": %d, "num2": 1}}' % (i, i)


def tasks_file(tmp_path: Path, bodies: Sequence[bytes], name: str = "tasks.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(b"".join(body + b"\n" for body in bodies))
    return str(path)


def new_manifest(tmp_path: Path, job: str = "job") -> Manifest:
    return Manifest.create(tmp_path / "jobs", job, "memory", {"queue": "q"}, "tasks.jsonl")


def run_functions(backend: InMemoryJobBackend) -> None:
    """What the deployed function does: each queued task through the pipeline into the store."""
    store = InMemoryResultStore()
    store.prefix = backend.prefix
    for body in backend.queue:
        process_message(body, store)
    backend.objects.update(store.objects)
    backend.queue.clear()


class TestSubmit:
    def test_every_task_is_sent_once_in_batches_and_recorded(self, tmp_path: Path) -> None:
        # GIVEN 25 tasks and a queue that takes 10 per batch
        backend = InMemoryJobBackend(max_batch_messages=10)
        manifest = new_manifest(tmp_path)
        # WHEN they are submitted
        summary = submit(
            backend,
            tasks_file(tmp_path, [task(i) for i in range(25)]),
            manifest=manifest,
            concurrency=3,
        )
        # THEN each arrives once, in batches of at most 10, and the manifest names them all
        assert sorted(backend.queue) == sorted(task(i) for i in range(25))
        assert max(len(batch) for batch in backend.batches) == 10
        assert manifest.sent_names() == {f"t-{i}" for i in range(25)}
        assert (summary.sent, summary.failed, summary.exit_code) == (25, 0, 0)
        assert Manifest.load(tmp_path / "jobs", "job").complete

    def test_bad_tasks_are_sent_as_written_under_their_record_names(self, tmp_path: Path) -> None:
        backend = InMemoryJobBackend()
        manifest = new_manifest(tmp_path)
        bodies = [b"not json", b'{"id": "x", "data": {"num1": "a", "num2": 1}}']
        submit(backend, tasks_file(tmp_path, bodies), manifest=manifest)
        assert backend.queue == bodies
        assert manifest.sent_names() == {record_name(b"not json"), "x"}

    def test_a_refusal_worth_retrying_is_sent_again(self, tmp_path: Path) -> None:
        backend = InMemoryJobBackend()
        backend.refuse[task(1)] = ("throttled", True)
        backend.refuse_times[task(1)] = 1
        summary = submit(
            backend,
            tasks_file(tmp_path, [task(0), task(1)]),
            manifest=new_manifest(tmp_path),
            pause=0,
        )
        assert sorted(backend.queue) == [task(0), task(1)]
        assert summary.exit_code == 0

    def test_a_permanent_refusal_is_counted_reported_once_and_the_rest_go_on(
        self, tmp_path: Path
    ) -> None:
        backend = InMemoryJobBackend()
        for i in (1, 2):
            backend.refuse[task(i)] = ("message holds a refused character", False)
        errors = io.StringIO()
        summary = submit(
            backend,
            tasks_file(tmp_path, [task(i) for i in range(4)]),
            manifest=new_manifest(tmp_path),
            errors=errors,
        )
        assert sorted(backend.queue) == [task(0), task(3)]
        assert (summary.sent, summary.failed, summary.exit_code) == (2, 2, 1)
        assert errors.getvalue().count("refused character") == 1

    def test_an_unsendable_body_never_reaches_the_queue(self, tmp_path: Path) -> None:
        backend = InMemoryJobBackend()
        long_task = b'{"id": "long", "data": {"num1": 1, "num2": 1}, "pad": "%s"}' % (b"x" * 2000)
        source = tasks_file(tmp_path, [task(1), long_task])
        summary = submit(backend, source, manifest=new_manifest(tmp_path), errors=io.StringIO())
        assert len(backend.queue) == 1
        assert summary.failed == 1

    def test_a_configuration_error_stops_the_submit_with_one_error(self, tmp_path: Path) -> None:
        # GIVEN a queue that answers "no such queue" to every batch
        backend = InMemoryJobBackend()
        backend.fail_with = [ConfigError("no queue q in us-east-1")] * 1000
        # WHEN 100k tasks are submitted
        summary = submit(
            backend,
            tasks_file(tmp_path, [task(i) for i in range(2000)]),
            manifest=new_manifest(tmp_path),
            concurrency=4,
        )
        # THEN it stops at once: one error, exit 2, only a few batches were tried
        assert isinstance(summary.stopped, ConfigError)
        assert summary.exit_code == 2
        assert summary.sent == 0
        assert len(backend.fail_with) > 1000 - 20

    def test_transient_errors_are_retried_then_stop(self, tmp_path: Path) -> None:
        backend = InMemoryJobBackend()
        backend.fail_with = [CloudUnavailableError("503")]
        summary = submit(
            backend, tasks_file(tmp_path, [task(0)]), manifest=new_manifest(tmp_path), pause=0
        )
        assert backend.queue == [task(0)] and summary.exit_code == 0
        backend = InMemoryJobBackend()
        backend.fail_with = [CloudUnavailableError("503")] * 3
        summary = submit(
            backend,
            tasks_file(tmp_path, [task(0)]),
            manifest=new_manifest(tmp_path, "job2"),
            attempts=3,
            pause=0,
        )
        assert backend.queue == []
        assert isinstance(summary.stopped, CloudUnavailableError) and summary.exit_code == 1

    def test_resume_sends_only_what_the_manifest_lacks(self, tmp_path: Path) -> None:
        # GIVEN a submit interrupted after the first batches
        source = tasks_file(tmp_path, [task(i) for i in range(30)])
        backend = InMemoryJobBackend(max_batch_messages=5)
        manifest = new_manifest(tmp_path)

        def interrupt_at_third(bodies: Sequence[bytes]) -> None:
            if len(backend.batches) == 2:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C, handled in the main thread

        backend.on_send = interrupt_at_third
        first = submit(backend, source, manifest=manifest, concurrency=1)
        assert first.interrupted and first.exit_code == 130
        assert not Manifest.load(tmp_path / "jobs", "job").complete
        sent_first = list(backend.queue)
        # WHEN it is resumed
        backend.on_send = None
        second = submit(backend, source, manifest=manifest, resume=True)
        # THEN every task was sent exactly once across the two runs
        assert sorted(backend.queue) == sorted(task(i) for i in range(30))
        assert second.skipped == len(sent_first) and second.sent == 30 - len(sent_first)
        assert Manifest.load(tmp_path / "jobs", "job").complete

    def test_a_job_name_is_not_reused_without_resume(self, tmp_path: Path) -> None:
        new_manifest(tmp_path)
        with pytest.raises(ConfigError, match="--resume"):
            new_manifest(tmp_path)

    def test_an_unsafe_job_name_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="job name"):
            new_manifest(tmp_path, "../outside")


class TestWatch:
    def test_counts_only_the_jobs_records_and_finishes(self, tmp_path: Path) -> None:
        backend = InMemoryJobBackend()
        backend.queue = [task(1), task(2), b"not json"]
        run_functions(backend)
        backend.objects["results/other-job.out"] = b"5"
        expected = {"t-1", "t-2", record_name(b"not json")}
        counts = poll(backend, expected)
        assert (counts.succeeded, counts.rejected, counts.in_flight) == (2, 1, 0)
        assert counts.finished

    def test_exit_codes_all_succeeded_some_failed_timeout(self, tmp_path: Path) -> None:
        backend = InMemoryJobBackend()
        backend.queue = [task(1)]
        run_functions(backend)
        out = io.StringIO()
        assert watch(backend, {"t-1"}, stream=out)[1] == 0
        backend.dead = [task(2)]
        assert watch(backend, {"t-1", "t-2"}, stream=out)[1] == 1
        backend.dead = []
        ticks = iter(range(1000))
        counts, code = watch(
            backend,
            {"t-1", "t-3"},
            interval=1,
            timeout=3,
            stream=out,
            sleep=lambda _: None,
            clock=lambda: float(next(ticks)),
        )
        assert code == EXIT_STILL_RUNNING
        assert (counts.succeeded, counts.in_flight) == (1, 1)

    def test_polls_until_the_function_catches_up(self) -> None:
        backend = InMemoryJobBackend()
        backend.queue = [task(i) for i in range(3)]
        out = io.StringIO()
        counts, code = watch(
            backend,
            {"t-0", "t-1", "t-2"},
            interval=0.01,
            stream=out,
            sleep=lambda _: run_functions(backend),
        )
        assert code == 0 and counts.succeeded == 3
        assert "0 succeeded" in out.getvalue() and "3 succeeded" in out.getvalue()
        assert backend.list_calls == 2  # one listing per poll


class TestFetch:
    def test_fetch_gives_the_local_runners_files_byte_for_byte(self, tmp_path: Path) -> None:
        # GIVEN a tasks file run by the function into the store, and by the local runner
        bodies = [
            task(1),
            b'{"id": "dec", "data": {"num1": 0.1, "num2": 0.2}}',
            b"not json",
            '{"id": "é", "data": {"num1": 1e3, "num2": -1}}'.encode(),
        ]
        source = tasks_file(tmp_path, bodies)
        backend = InMemoryJobBackend()
        backend.queue = list(bodies)
        run_functions(backend)
        assert (
            run_locally(
                ["--tasks", source, "--results-dir", str(tmp_path / "local"), "--no-progress"]
            )
            == 1  # one task rejected
        )
        # WHEN the results are fetched
        summary = fetch(backend, tmp_path / "fetched")
        # THEN both directories hold the same files with the same bytes
        local = {p.name: p.read_bytes() for p in (tmp_path / "local").iterdir()}
        fetched = {p.name: p.read_bytes() for p in (tmp_path / "fetched").iterdir()}
        assert fetched == local
        assert (summary.results, summary.errors, summary.exit_code) == (3, 1, 0)

    def test_a_second_fetch_skips_identical_files_and_repairs_others(self, tmp_path: Path) -> None:
        backend = InMemoryJobBackend()
        backend.objects = {"results/a.out": b"1", "results/b.out": b"2"}
        fetch(backend, tmp_path)
        (tmp_path / "b.out").write_bytes(b"9")
        backend.reads = 0
        summary = fetch(backend, tmp_path)
        assert summary.unchanged == 1 and backend.reads == 1
        assert (tmp_path / "b.out").read_bytes() == b"2"

    def test_only_the_jobs_names_and_never_an_unsafe_name(self, tmp_path: Path) -> None:
        backend = InMemoryJobBackend()
        backend.objects = {
            "results/a.out": b"1",
            "results/b.out": b"2",
            "results/...out": b"x",
            "results/a/../../x.out": b"y",
        }
        summary = fetch(backend, tmp_path / "d", names={"a", ".."}, errors=io.StringIO())
        assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["a.out"]
        assert summary.refused == 1 and summary.exit_code == 1
        assert not (tmp_path / "x.out").exists()

    def test_an_unusable_directory_is_one_config_error(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(ConfigError):
            fetch(InMemoryJobBackend(), tmp_path / "file")


class TestRedrive:
    def test_dead_letters_move_back_and_leave_the_dead_letter_queue(self) -> None:
        backend = InMemoryJobBackend()
        backend.dead = [task(i) for i in range(23)]
        summary = redrive(backend, idle_polls=1)
        assert sorted(backend.queue) == sorted(task(i) for i in range(23))
        assert backend.dead == [] and backend.locked == {}
        assert (summary.moved, summary.exit_code) == (23, 0)

    def test_a_failed_send_deletes_nothing(self) -> None:
        backend = InMemoryJobBackend()
        backend.dead = [task(1), task(2)]
        backend.fail_with = [CloudUnavailableError("503")]
        with pytest.raises(CloudUnavailableError):
            redrive(backend, idle_polls=1)
        assert sorted(backend.dead) == [task(1), task(2)] and backend.locked == {}

    def test_refused_letters_stay_in_the_dead_letter_queue(self) -> None:
        backend = InMemoryJobBackend()
        backend.dead = [task(1), task(2)]
        backend.refuse[task(2)] = ("too large", False)
        summary = redrive(backend, idle_polls=1)
        assert backend.queue == [task(1)]
        assert backend.dead == [task(2)] and summary.refused >= 1 and summary.exit_code == 1


def test_status_lines_count_results_and_dead_letters() -> None:
    backend = InMemoryJobBackend()
    backend.queue = [task(1), b"{"]
    run_functions(backend)
    backend.dead = [task(3)]
    lines = status_lines(backend)
    assert "unknown waiting" in lines[0]
    assert lines[1] == "dead letters: 1"
    assert "1 .out, 1 .err" in lines[2]


def test_manifest_names_survive_odd_ids(tmp_path: Path) -> None:
    manifest = new_manifest(tmp_path)
    names = ["é-数", "a b", "x\u2028y"]
    manifest.record_sent(names)
    assert manifest.sent_names() == set(names)
    header = json.loads(manifest.header_path.read_text())
    assert header["cloud"] == "memory"


def test_a_letter_refused_again_and_again_counts_once() -> None:
    backend = InMemoryJobBackend(max_batch_messages=2)
    backend.dead = [task(1), task(2), task(3)]
    backend.refuse[task(2)] = ("too large", False)
    summary = redrive(backend, idle_polls=1)
    assert sorted(backend.queue) == [task(1), task(3)]
    assert summary.refused == 1 and backend.dead == [task(2)]


def test_the_resume_advice_never_repeats_a_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import argparse

    from core.ops.commands import _command_line

    args = argparse.Namespace(
        cloud="azure",
        argv=[
            "submit",
            "azure",
            "--queue",
            "q",
            "--connection-string",
            "Endpoint=sb://x;SharedAccessKey=s3cret",
            "--blob-connection-string=AccountKey=k3y",
            "t.jsonl",
        ],
    )
    line = _command_line(args, "t")
    assert "s3cret" not in line and "k3y" not in line
    assert line.startswith("adder submit azure --job t --queue q")


def test_batches_queued_behind_a_slow_send_are_all_sent(tmp_path: Path) -> None:
    # GIVEN one sender thread and a queue that takes a while per batch
    backend = InMemoryJobBackend(max_batch_messages=5)
    backend.on_send = lambda bodies: time.sleep(0.01)
    # WHEN 50 tasks are submitted
    summary = submit(
        backend,
        tasks_file(tmp_path, [task(i) for i in range(50)]),
        manifest=new_manifest(tmp_path),
        concurrency=1,
    )
    # THEN the batches still queued when the file ended were sent too
    assert sorted(backend.queue) == sorted(task(i) for i in range(50))
    assert summary.sent == 50


def test_fetch_downloads_at_once_up_to_the_backends_pool_whatever_its_send_limit(
    tmp_path: Path,
) -> None:
    # GIVEN a backend that sends one batch at a time but pools 8 download connections
    backend = InMemoryJobBackend()
    backend.max_concurrency = 1
    backend.max_fetch_concurrency = 8
    backend.read_delay = 0.02
    backend.objects = {f"results/t{i}.out": b"1" for i in range(64)}
    # WHEN 64 results are fetched with the default concurrency
    summary = fetch(backend, tmp_path)
    # THEN downloads overlapped, up to the pool and no further
    assert summary.results == 64
    assert backend.most_reading == 8
