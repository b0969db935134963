"""Console script ``intersection-meta-replay``: runs ``viz.replay.main``.

``viz/`` is an application folder next to the package (not installed into site-packages), so this shim puts
the repository root (the parent of this package's folder) on ``sys.path`` when ``viz`` is not importable.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    try:
        from viz.replay import main as replay_main
    except ModuleNotFoundError as err:
        if err.name != "viz":
            raise
        repo_root = Path(__file__).resolve().parent.parent
        if not (repo_root / "viz" / "replay.py").is_file():
            print("intersection-meta-replay: error: the viz/ folder is not next to the installed package; "
                  "run `python -m viz.replay` from a checkout of the repository", file=sys.stderr)
            return 2
        sys.path.insert(0, str(repo_root))
        from viz.replay import main as replay_main
    return replay_main()


if __name__ == "__main__":
    sys.exit(main())
