"""The frozen bundle's entry point (packaging/finetune-desk.spec): `desktop.__main__.main`."""

import sys

from desktop.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
