"""``python -m intersection_meta.train``: runs :mod:`intersection_meta.cli.train` (kept for that command)."""

from __future__ import annotations

if __name__ == "__main__":
    import sys

    from intersection_meta.cli.train import main

    sys.exit(main())
