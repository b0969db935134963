"""``python -m viz`` is ``python -m viz.replay``."""

import sys

from .replay import main

sys.exit(main())
