"""``python -m flexfix``: the ``flexfix`` command."""

import sys

from flexfix.cli import main

sys.exit(main())
