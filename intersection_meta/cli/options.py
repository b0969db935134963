"""Options shared by the command lines: ``--set``, ``--threads``, ``--ray``, and validated counts and seeds."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from intersection_meta.schema import shorten


def add_set_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE`` (repeatable); ``what`` says which keys it takes."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=what + " (repeatable)")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (torch intra-op threads of the process)."""
    parser.add_argument(
        "--threads", type=bounded_int(1, 256), default=1, help="torch CPU threads (default 1: fastest for these small networks)"
    )


def set_torch_threads(threads: int) -> None:
    """Process-wide torch thread count, set once by a command-line entry point (never by the library).

    One thread is fastest here: the networks are tiny, and on a small shared machine torch's intra-op threads
    make each small op several times slower.
    """
    import torch

    torch.set_num_threads(max(1, int(threads)))


def add_ray_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--ray [ADDRESS]``: None without the flag, ``""`` (a new local instance) with no address."""
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help=what + "; no ADDRESS starts a local Ray instance, 'auto' joins the cluster of this machine "
        "(ray start), ray://HOST:PORT a remote one (needs the [ray] extra)",
    )


def integer(text: str) -> int:
    """An integer from the command line; scientific notation of a whole number counts (``1e3`` is 1000).

    Raises:
        argparse.ArgumentTypeError: not a whole number.
    """
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {shorten(repr(text), 60)}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {shorten(repr(text), 60)}")
    return int(value)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse ``type`` for an integer in ``[low, high]`` (counts, seeds), with a one-line error."""

    def parse(text: str) -> int:
        value = integer(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its message
    return parse


#: Seeds: non-negative (they key ``derive_seed``), below 2**63.
SEED = bounded_int(0, 2**63 - 1)
#: How many tasks, episodes, samples a command line may ask for (the bounds stop a typo from running for days).
MAX_COUNT = 100_000
