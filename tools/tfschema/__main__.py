"""``python -m tools.tfschema STACK_DIR...``"""

from __future__ import annotations

import sys

from .check import main

sys.exit(main())
