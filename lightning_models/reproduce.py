"""``python -m lightning_models.reproduce``: the command of
:mod:`lightning_models.tools.reproduce`, under the shorter name."""

import sys

from lightning_models.tools.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
