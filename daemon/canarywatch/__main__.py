"""``python -m canarywatch``: the same as the ``canarywatch`` command."""

import sys

from canarywatch.cli.entry import main

sys.exit(main())
