"""Offline schema check for Terraform stacks (what ``terraform validate`` would catch).

``build.py`` extracts compact provider schemas into ``tools/tfschema/schemas``; ``check.py``
checks stacks against them. See ``check.py`` for usage.
"""
