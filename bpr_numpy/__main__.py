"""``python -m bpr_numpy``: the command line (see :mod:`bpr_numpy.cli`)."""

import sys

from .cli import main

sys.exit(main())
