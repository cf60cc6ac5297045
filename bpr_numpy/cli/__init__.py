"""Command line: ``bpr-numpy`` (console script) and ``python -m bpr_numpy``.

Sub-commands:

* ``train``: fit BPR on ``--data PATH`` (a MovieLens folder/zip of any
  release, a LightGCN folder, a delimited file), ``--dataset ml-100k`` etc.
  from the local cache (``--download`` to fetch), ``--movielens PATH``
  (``--data PATH --split ua``), or the built-in synthetic set; split it
  (``--split``); report each epoch (one live line on a terminal) and the
  held-out metrics; ``--save`` writes the model.
* ``gradcheck``: run the finite-difference oracle on a random problem and print
  the max relative error per parameter block; exit status 1 above tolerance.
* ``evaluate``: the held-out metrics of a saved model on the split it was
  trained against, rebuilt from the same data options (``--synthetic`` for
  the built-in set); ``--json``.
* ``tune``: successive halving over a search space (:func:`bpr_numpy.tune`) within
  ``--budget`` seconds, scored on a validation split (a LightGCN folder's valid.txt, else
  a part of the training data); prints the table of checkpoints and the best parameters
  as JSON (``--output`` writes them).
* ``recommend``: top items for users given by their raw ids (``--user`` or
  ``--users-file``), liked items filtered, with titles when the model has them.
* ``similar``: nearest items by cosine of the item factors.
* ``bench``: a short local throughput run at 1 and ``--threads`` threads.

Exit status: 0 success, 1 failure (including unknown ids and unreadable model
files), 2 usage error, 130 interrupted. No traceback unless ``--debug``.

The package, one job a module: ``_parser`` (the options), ``_data`` (the
data options: loading and splitting), ``_commands`` (each sub-command),
``_ids`` (raw ids of a saved model), ``_output`` (progress lines, tables,
result rows) and ``_errors`` (one-line errors, exit statuses, Ctrl-C).
"""

from __future__ import annotations

from collections.abc import Sequence

from ._commands import _bench, _evaluate, _gradcheck, _recommend, _similar, _train, _tune
from ._errors import CLIError, _interrupt_once, _report_errors
from ._output import format_progress
from ._parser import build_parser

__all__ = ["main", "build_parser", "format_progress", "CLIError"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    with _interrupt_once():
        return _run(args)


def _run(args) -> int:
    return _report_errors(_dispatch, args)


def _dispatch(args) -> int:
    # The commands are looked up here, in the package's namespace, when called: replacing
    # bpr_numpy.cli._train (as the tests do) changes what `main(["train"])` runs.
    return {
        "train": _train,
        "gradcheck": _gradcheck,
        "evaluate": _evaluate,
        "recommend": _recommend,
        "similar": _similar,
        "bench": _bench,
        "tune": _tune,
    }[args.command](args)
