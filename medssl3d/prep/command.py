"""What every ``data_prep/`` command shares: one-line errors instead of tracebacks, and per-file failures.

A command's ``main`` is ``run_command(prog, run, args)``: ``run(args)`` returns the exit status; an
exception becomes one line ``<prog>: error: <message>`` and status 1 (``--debug`` re-raises it with its
traceback); Ctrl-C gives status 130 and a reminder that finished outputs are complete.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["report_failures", "run_command"]


def run_command(prog: str, run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call ``run(args)``, turning any error into one line on stderr (or re-raising it with ``args.debug``)."""
    try:
        return run(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished outputs are complete, none is half-written.", file=sys.stderr)
        return 130
    except Exception as error:
        if getattr(args, "debug", False):
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1


def report_failures(prog: str, sources: Sequence, outcomes: Sequence, debug: bool = False) -> int:
    """Print one line per failed input (``outcomes[i]`` an exception), naming it; return how many failed.

    With ``debug`` the first failure is re-raised instead, with its traceback.
    """
    failures = [(source, outcome) for source, outcome in zip(sources, outcomes) if isinstance(outcome, Exception)]
    if debug and failures:
        raise failures[0][1]
    for source, error in failures:
        message = str(error) if str(source) in str(error) else f"{source}: {error}"
        print(f"{prog}: error: {message}", file=sys.stderr)
    return len(failures)
