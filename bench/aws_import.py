"""Import time of the Lambda handler module against ``import boto3`` alone, in one run.

Both are measured in fresh interpreters, as Lambda's init phase runs them: ``python -S``
(no site-packages hooks), ``PYTHONPATH`` = the unpacked deployment zip (``adder package aws``)
plus boto3's own directory, ``PYTHONDONTWRITEBYTECODE=1``. The zip holds sources only, so the
handler's modules are compiled at import, as on Lambda; boto3's bytecode is cached, as in the
runtime's image. Time is measured inside the process around the import (start-up excluded).

    python -m bench.aws_import            # 31 interleaved runs each
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import boto3

from bench._common import Timing, verdict
from core.clouds import CLOUDS
from core.packaging import build_package

TARGET = 1.10
PROBE = "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=31, help="runs per variant (default 31)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as work:
        code_dir = Path(work) / "task"
        with zipfile.ZipFile(
            build_package(CLOUDS["aws"], Path(work) / "aws_lambda.zip")
        ) as archive:
            archive.extractall(code_dir)
        sdk_dir = Path(boto3.__file__).resolve().parent.parent
        env = {
            **os.environ,
            "PYTHONPATH": f"{code_dir}{os.pathsep}{sdk_dir}",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        modules = {"import boto3": "boto3", "import aws_lambda.handler": "aws_lambda.handler"}
        timings = {name: Timing(name, []) for name in modules}
        for _ in range(args.repeat):
            for name, module in modules.items():
                out = subprocess.run(
                    [sys.executable, "-S", "-c", PROBE.format(module=module)],
                    env=env,
                    cwd=work,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                timings[name].seconds.append(float(out.stdout))
        assert not list(code_dir.rglob("*.pyc")), "the handler must be measured from sources"

    base = timings["import boto3"].median
    print(f"Lambda handler import vs boto3 alone, median of {args.repeat} fresh processes")
    print(f"{'variant':<28}{'median':>10}{'vs boto3':>10}  spread")
    for timing in timings.values():
        print(
            f"{timing.name:<28}{timing.median * 1000:>8.1f}ms{timing.median / base:>9.3f}x  {timing.spread}"
        )
    pairs = zip(
        timings["import aws_lambda.handler"].seconds, timings["import boto3"].seconds, strict=True
    )
    paired = statistics.median(ours / theirs for ours, theirs in pairs)
    print(f"ratio of medians: {timings['import aws_lambda.handler'].median / base:.3f}x")
    print(
        f"handler / boto3, median of per-round ratios: {paired:.3f}x",
        verdict(paired, TARGET, at_most=True),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
