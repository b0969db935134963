"""Options shared by the command lines: ``--set``, ``--threads`` and ``--ray``."""

from __future__ import annotations

import argparse


def add_set_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--set KEY=VALUE`` (repeatable); ``what`` says which keys it takes."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=what + " (repeatable)")


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (torch intra-op threads of the process)."""
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: fastest for these small networks)"
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
