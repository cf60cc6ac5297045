"""``python -m bpr_numpy.cli``: the command line (the same as ``python -m bpr_numpy``)."""

import sys

from . import main

sys.exit(main())
