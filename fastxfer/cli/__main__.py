"""``python -m fastxfer.cli``: the same as the ``fastxfer`` command."""

import sys

from fastxfer.cli import main

sys.exit(main())
