"""``python -m intersection_meta.scenarios``: runs :mod:`intersection_meta.cli.scenarios` (kept for that command)."""

from __future__ import annotations

if __name__ == "__main__":
    import sys

    from intersection_meta.cli.scenarios import main

    sys.exit(main())
