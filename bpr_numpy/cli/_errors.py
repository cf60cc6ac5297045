"""Failures on the command line: one line on stderr and an exit status, Ctrl-C handled once.

Exit status: 1 for errors (:class:`CLIError`, bad values, files, memory, and
bugs, which say "internal error"), 130 when interrupted. ``--debug`` re-raises
instead, for the traceback.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any


class CLIError(Exception):
    """An error to report in one line, with exit status 1."""


def _interrupt_once_handler(signum, frame):
    # Ignore further Ctrl-Cs before raising: the first one's handling (restoring the last
    # completed epoch, saving it with --save, the message) then always finishes and exits 130,
    # where a second Ctrl-C inside it would escape and end the process with status -2.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextmanager
def _interrupt_once():
    """Within the block, the first Ctrl-C raises KeyboardInterrupt and later ones are ignored."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield  # signals are the main thread's; a host program's own handler is left alone
        return
    signal.signal(signal.SIGINT, _interrupt_once_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _report_errors(run: Callable[[Any], int], args) -> int:
    """``run(args)``'s exit status; an error or interruption becomes one line on stderr and its status."""
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): not an error worth a message
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 1
    except (CLIError, ValueError, TypeError, OSError, FloatingPointError, RuntimeError) as exc:
        if args.debug:
            raise
        print(f"bpr-numpy {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except MemoryError as exc:  # data or settings too large for this machine: the user's to change
        if args.debug:
            raise
        print(
            f"bpr-numpy {args.command}: error: out of memory{': ' + str(exc) if str(exc) else ''} (a smaller "
            "data set, fewer --factors, or a machine with more memory)",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # a bug: still one line, the traceback with --debug
        if args.debug:
            raise
        print(
            f"bpr-numpy {args.command}: internal error: {type(exc).__name__}: {exc} (run with --debug for the "
            "traceback)",
            file=sys.stderr,
        )
        return 1
