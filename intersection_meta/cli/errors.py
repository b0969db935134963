"""The one error path of the command lines: every failure ends in one line on stderr and an exit status.

=========  ====================================================================================================
status     cause
=========  ====================================================================================================
2          bad input (a ``ValueError``: configuration, scenario, checkpoint, recording, run directory, benchmark
           errors) or an operating-system error (unwritable or full disk, a path that is a file, a name too long)
3          training diverged (:class:`~intersection_meta.health.TrainingDiverged`); the last good checkpoint is kept
130        Ctrl-C, in any phase
=========  ====================================================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from intersection_meta.health import TrainingDiverged
from intersection_meta.schema import shorten

EXIT_ERROR = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


def os_error_line(exc: OSError) -> str:
    """``PATH: strerror`` (both paths for a rename), e.g. ``runs/x/metrics.csv: No space left on device``."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = exc.strerror or str(exc) or type(exc).__name__
    return shorten(f"{where}: {what}" if where else what, 400)


def run_reporting_errors(body: Callable[[], int], on_interrupt: Callable[[], str] | None = None) -> int:
    """``body()``, with its errors turned into one line on stderr and the exit status of the table above.

    Args:
        on_interrupt: returns the line printed after Ctrl-C (what was saved, how to continue); default
            ``interrupted``.
    """
    try:
        return body()
    except KeyboardInterrupt:
        print(f"\n{on_interrupt() if on_interrupt else 'interrupted'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except ValueError as exc:  # LoadError, TrainError, CheckpointError, RecordingFileError, BenchError
        print(f"error: {shorten(str(exc), 2000)}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
