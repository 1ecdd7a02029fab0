"""``python -m core.worker --config cloud-config.json``: the same as ``adder work``."""

from __future__ import annotations

import sys

from core.worker.command import main

sys.exit(main())
