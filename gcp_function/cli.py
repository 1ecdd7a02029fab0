"""``adder package|submit|status gcp``. Google SDKs are imported only when a command runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.packaging import PackageSpec, register_package_command

if TYPE_CHECKING:
    import argparse

PACKAGE = PackageSpec(
    provider="gcp",
    default_output="dist/gcp_function.zip",
    packages={"core": (), "gcp_function": ("cli.py", "publish.py", "status.py", "main.py")},
    root_files={
        "main.py": "gcp_function/main.py",
        "requirements.txt": "gcp_function/requirements.txt",
    },
)


def register(groups: dict[str, argparse._SubParsersAction[Any]]) -> None:
    """Add the Google Cloud subcommands to ``adder``."""
    register_package_command(groups, PACKAGE)
