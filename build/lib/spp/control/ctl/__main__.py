"""``python -m spp.control.ctl`` is ``spp-ctl``."""

import sys

from .main import main

sys.exit(main())
