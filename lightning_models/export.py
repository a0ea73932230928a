"""``python -m lightning_models.export``: the command of
:mod:`lightning_models.tools.export`, under the shorter name."""

import sys

from lightning_models.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
