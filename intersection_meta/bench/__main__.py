"""``python -m intersection_meta.bench``: runs :mod:`intersection_meta.cli.bench`."""

from __future__ import annotations

import sys

from intersection_meta.cli.bench import main

sys.exit(main())
