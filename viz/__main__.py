"""``python -m viz`` is ``python -m viz.replay``."""

import sys

from viz.replay import main

sys.exit(main())
