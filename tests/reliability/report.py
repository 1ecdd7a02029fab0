"""``python -m tests.reliability.report``: regenerate RELIABILITY.md.

By default it first runs the reliability tests with the full-size load run
(``ADDER_LOAD_MESSAGES=100000``), then writes RELIABILITY.md from the rows they recorded in
``.cache/reliability/``. ``--no-run`` only rewrites the file from rows already recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from tests.conftest import REPO_ROOT
from tests.reliability.ledger import LOAD_MESSAGES_ENV, RECORDS_DIR

if TYPE_CHECKING:
    from pathlib import Path

OUTPUT = REPO_ROOT / "RELIABILITY.md"
COLUMNS = [
    ("area", "area"),
    ("target", "target"),
    ("what", "what was tried"),
    ("cases", "cases"),
    ("messages", "messages"),
    ("faults_injected", "faults injected"),
    ("results", "results"),
    ("error_records", "error records"),
    ("dead_lettered", "dead-lettered"),
    ("lost", "lost"),
    ("wrong", "wrong"),
    ("duplicates", "duplicate deliveries"),
    ("seconds", "seconds"),
]
AREA_ORDER = ["bad input", "store faults", "duplicate delivery", "load", "crash", "security"]


def run_gauntlet(load_messages: int) -> int:
    """Run tests/reliability with the given load size; return pytest's exit code."""
    for stale in RECORDS_DIR.glob("*.json"):
        stale.unlink()
    env = {**os.environ, LOAD_MESSAGES_ENV: str(load_messages)}
    command = [sys.executable, "-m", "pytest", "tests/reliability", "-q", "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, check=False).returncode


def load_rows(directory: Path = RECORDS_DIR) -> list[dict[str, object]]:
    """Every recorded row, in a stable order."""
    rows = [json.loads(path.read_text(encoding="utf-8")) for path in directory.glob("*.json")]

    def key(row: dict[str, object]) -> tuple[int, str, str]:
        area = str(row["area"])
        rank = AREA_ORDER.index(area) if area in AREA_ORDER else len(AREA_ORDER)
        return rank, str(row["target"]), str(row["what"])

    return sorted(rows, key=key)


def render(rows: list[dict[str, object]], command: str) -> str:
    """RELIABILITY.md's text."""
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "| " + " | ".join("---" for _ in COLUMNS) + " |"
    lines = []
    for row in rows:
        cells = []
        for name, _ in COLUMNS:
            value = row.get(name, "")
            if name == "seconds":
                value = f"{float(value):.1f}"  # type: ignore[arg-type]
            elif isinstance(value, int):
                value = f"{value:,}"
            cells.append(str(value).replace("|", "\\|"))
        lines.append("| " + " | ".join(cells) + " |")
    totals = {
        name: sum(int(row.get(name, 0)) for row in rows)  # type: ignore[call-overload]
        for name in ("messages", "faults_injected", "lost", "wrong")
    }
    notes = [
        f"- **{row['target']} / {row['what']}**: {row['note']}" for row in rows if row.get("note")
    ]
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join(
        [
            "# Reliability",
            "",
            "What the reliability gauntlet (`tests/reliability/`) tried, and what came out. Every",
            "row's ledger balances: results + error records + dead-lettered = messages submitted.",
            f"Generated {generated} by `{command}` on a 2-core machine.",
            "",
            f"In all: {totals['messages']:,} messages, {totals['faults_injected']:,} faults injected,"
            f" **{totals['lost']} lost, {totals['wrong']} wrong**.",
            "",
            header,
            rule,
            *lines,
            "",
            *(["## Notes", "", *notes, ""] if notes else []),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--no-run", action="store_true", help="only rewrite the file from recorded rows"
    )
    parser.add_argument(
        "--load-messages", type=int, default=100_000, help="size of the load run (default 100000)"
    )
    args = parser.parse_args(argv)
    command = "python -m tests.reliability.report"
    if not args.no_run:
        code = run_gauntlet(args.load_messages)
        if code != 0:
            print(
                f"the gauntlet failed (pytest exit {code}); RELIABILITY.md not written",
                file=sys.stderr,
            )
            return code
    rows = load_rows()
    if not rows:
        print("no recorded rows: run the reliability tests first", file=sys.stderr)
        return 1
    OUTPUT.write_text(render(rows, command), encoding="utf-8")
    print(f"wrote {OUTPUT} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
