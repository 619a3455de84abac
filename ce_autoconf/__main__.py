"""``python -m ce_autoconf``: the same as the ``ce-autoconf`` console script."""

import sys

from ce_autoconf.cli import main

sys.exit(main())
