"""The run directory's files that outlive a process: the lock, ``metrics.csv``, ``tasks.jsonl``, stale temporaries.

Crash safety rests on three rules, so a kill at any instant (fresh run or resume) loses no completed iteration:

1. **Append only, one ``write`` per record, flushed and fsynced before the checkpoint.** A row of iteration ``k``
   reaches the disk before ``last.pt`` says ``k`` is done; a kill can only leave rows *after* the checkpoint, or a
   partial last line.
2. **Truncation on resume never rewrites in place.** The kept lines (iterations ``<= checkpoint``, whole lines
   only) go to a temporary file that replaces the log with ``os.replace``; until then the old log is untouched.
3. **Readers tolerate a partial last line** (a line without its newline is not a record yet).

:class:`RunLock` makes one process the only writer of a run directory: an OS lock (``fcntl.flock``) on
``RUN/.lock``, which the kernel drops when its holder dies (even by ``kill -9``), so a stale lock file never
blocks a resume. The file holds the holder's PID for the error message of the second process.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

LOCK_NAME = ".lock"


class RunLock:
    """Exclusive, non-blocking lock on a run directory (``with RunLock(out_dir): ...``).

    Raises:
        busy_error: on entry, when another process (or another ``RunLock`` of this process) holds it, naming the
            holder's PID.
    """

    def __init__(self, run_dir: Path, busy_error: type[Exception] = RuntimeError) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.busy_error = busy_error
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self.busy_error(
                    f"{self.path.parent} is in use by another training process (PID {holder}); wait for it to "
                    "finish or stop it, or choose another --out"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock; the file stays (harmless, the next holder rewrites it)
            self._fd = None


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete temporary files a killed process left in ``run_dir`` and ``run_dir/checkpoints`` (``*.tmp``: atomic
    checkpoint and log writes that never reached their ``os.replace``). Call it while holding the run's lock.

    Returns:
        The files removed.
    """
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if folder.is_dir():
            for path in folder.glob("*.tmp"):
                if path.is_file():
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def complete_lines(data: bytes) -> list[bytes]:
    """The newline-terminated lines of ``data`` (without newlines); a partial last line is dropped."""
    lines = data.split(b"\n")
    return lines[:-1]  # the piece after the last newline is empty or partial


def replace_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync, ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def append_record(path: Path, text: str) -> None:
    """Append ``text`` (whole lines) with one ``write``, then flush and fsync, so it is on disk before the next
    checkpoint."""
    with path.open("ab") as fh:
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


class MetricsLog:
    """``metrics.csv``: a header and one row per iteration, in ``columns`` order."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.path, self.columns = Path(path), tuple(columns)

    def start(self, keep_through: int) -> None:
        """Keep the rows of iterations ``1..keep_through`` (whole lines only), under the current header."""
        kept: list[Mapping[str, str]] = []
        if keep_through > 0 and self.path.exists():
            kept = [r for r in _csv_rows(self.path) if _iteration(r.get("iteration")) <= keep_through]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: r.get(c, "") for c in self.columns} for r in kept)
        replace_atomically(self.path, buffer.getvalue().encode("utf-8"))

    def append(self, row: Mapping[str, Any]) -> None:
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n").writerow(
            {c: row.get(c, "") for c in self.columns}
        )
        append_record(self.path, buffer.getvalue())


class JsonLinesLog:
    """A JSON-lines log (``tasks.jsonl``): one object per line with at least ``iteration``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def start(self, keep_through: int) -> None:
        """Keep the records of iterations ``1..keep_through`` (whole, parseable lines only)."""
        kept = []
        if keep_through > 0 and self.path.exists():
            kept = [line for line, record in _json_lines(self.path) if _iteration(record.get("iteration")) <= keep_through]
        replace_atomically(self.path, b"".join(line + b"\n" for line in kept))

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        append_record(self.path, "".join(json.dumps(r) + "\n" for r in records))


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log, skipping a partial last line (and any line that is not an object)."""
    return [record for _, record in _json_lines(Path(path))]


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV log, skipping a partial last line."""
    return _csv_rows(Path(path))


def _json_lines(path: Path) -> list[tuple[bytes, dict[str, Any]]]:
    out = []
    for line in complete_lines(path.read_bytes()):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn write from an older version that did not end in a newline
        if isinstance(record, dict):
            out.append((line, record))
    return out


def _csv_rows(path: Path) -> list[dict[str, str]]:
    text = b"".join(line + b"\n" for line in complete_lines(path.read_bytes())).decode("utf-8", "replace")
    return [dict(r) for r in csv.DictReader(io.StringIO(text))]


def _iteration(value: Any) -> float:
    """A record's iteration, or +inf when unreadable (so it is never kept)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return float("inf")

