"""Console script ``intersection-meta-replay``: the viewer, installed as ``intersection_meta.viz``.

In a checkout the viewer is the top-level ``viz/`` folder (``python -m viz.replay``); every install (a wheel, or
an editable install) maps that folder to ``intersection_meta.viz`` (see ``setup.py``), which is what this imports.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from intersection_meta.viz.replay import main as replay_main
    except ModuleNotFoundError as err:
        if err.name != "intersection_meta.viz":
            raise
        print("intersection-meta-replay: error: this copy of intersection_meta has no viewer (intersection_meta.viz); "
              "reinstall it (pip install .), or run `python -m viz.replay` from a checkout", file=sys.stderr)
        return 2
    return replay_main()


if __name__ == "__main__":
    sys.exit(main())
