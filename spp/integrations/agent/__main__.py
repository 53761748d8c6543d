import sys

from spp.integrations.agent.cli import main

sys.exit(main())
