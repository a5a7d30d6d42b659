"""`python -m desktop.cli`: the `finetune-desk` commands (the tests run the CLI this way)."""

from __future__ import annotations

import sys

from desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
