"""``adder package|submit|status azure``. Azure SDKs are imported only when a command runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.packaging import PackageSpec, register_package_command

if TYPE_CHECKING:
    import argparse

PACKAGE = PackageSpec(
    provider="azure",
    default_output="dist/azure_function.zip",
    packages={"core": (), "azure_function": ("cli.py", "send.py", "status.py", "function_app.py")},
    root_files={
        "function_app.py": "azure_function/function_app.py",
        "host.json": "azure_function/host.json",
        "requirements.txt": "azure_function/requirements.txt",
    },
)


def register(groups: dict[str, argparse._SubParsersAction[Any]]) -> None:
    """Add the Azure subcommands to ``adder``."""
    register_package_command(groups, PACKAGE)
