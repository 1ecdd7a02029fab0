"""Local runner throughput against a naive loop, in one run.

Baseline ("naive"): ``json.loads`` + add + ``open/write/close`` of one file per task, no
validation, not crash-safe. Variants: ``python -m core.local`` with 1 and 2 workers. All run as
subprocesses of this script on the same tasks file, interleaved, median of ``--repeat`` runs.

    python -m bench.local_runner                      # 100,000 tasks on /dev/shm
    python -m bench.local_runner --dir /var/tmp/bench # the same on disk
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import time_interleaved, verdict

REPO_ROOT = Path(__file__).resolve().parent.parent

NAIVE = """
import json, os, sys
tasks, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
with open(tasks, "rb") as lines:
    for line in lines:
        task = json.loads(line)
        result = task["data"]["num1"] + task["data"]["num2"]
        with open(os.path.join(out, task["id"] + ".out"), "w") as f:
            f.write(str(result))
"""


def write_tasks(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        for i in range(count):
            task = {"id": f"task-{i}", "data": {"num1": i, "num2": 3 * i + 7}}
            out.write(json.dumps(task) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks per run (default 100000)")
    parser.add_argument(
        "--dir", default="/dev/shm", help="where tasks and results go (default /dev/shm)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (default 3)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="adder-bench-", dir=args.dir))
    tasks = work / "tasks.jsonl"
    write_tasks(tasks, args.tasks)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def command(*extra: str) -> list[str]:
        return [sys.executable, "-m", "core.local", "--tasks", str(tasks), "--no-progress", *extra]

    def results_of(name: str) -> Path:
        return work / f"results-{name}"

    def run(cmd: list[str]) -> None:
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)

    variants = {
        "naive": lambda: run([sys.executable, "-c", NAIVE, str(tasks), str(results_of("naive"))]),
        "adder 1 worker": lambda: run(
            command("--workers", "1", "--results-dir", str(results_of("adder 1 worker")))
        ),
        "adder 2 workers": lambda: run(
            command("--workers", "2", "--results-dir", str(results_of("adder 2 workers")))
        ),
    }
    try:
        timings = time_interleaved(
            variants, args.repeat, before_each=lambda name: shutil.rmtree(results_of(name), True)
        )
        # every variant must have produced every result, identically
        for name in variants:
            produced = len(os.listdir(results_of(name)))
            assert produced == args.tasks, f"{name} wrote {produced} of {args.tasks} results"
        sample = f"task-{args.tasks - 1}.out"
        assert {(results_of(n) / sample).read_text() for n in variants} == {
            str(4 * (args.tasks - 1) + 7)
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)

    naive = timings["naive"].median
    print(
        f"local runner, {args.tasks:,} tasks in {args.dir}, median of {args.repeat} (cpus: {os.cpu_count()})"
    )
    print(f"{'variant':<18}{'median':>9}{'tasks/s':>11}{'vs naive':>10}  spread")
    for timing in timings.values():
        print(
            f"{timing.name:<18}{timing.median:>8.2f}s{args.tasks / timing.median:>11,.0f}"
            f"{naive / timing.median:>9.2f}x  {timing.spread}"
        )
    print("adder 1 worker :", verdict(naive / timings["adder 1 worker"].median, 0.9))
    print("adder 2 workers:", verdict(naive / timings["adder 2 workers"].median, 1.6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
