"""`python -m audiostyle.platform` runs the CLI (the console script is `audiostyle`)."""

import sys

from audiostyle.platform.cli.main import main

sys.exit(main())
