"""``python -m spp.control.cli`` runs the CLI, like ``python -m spp.control.cli.main``."""

import sys

from .main import main

sys.exit(main())
