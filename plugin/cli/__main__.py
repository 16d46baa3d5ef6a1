"""``python -m plugin.cli``: the same as the ``domain-finder`` console script."""
import sys

from plugin.cli import main

sys.exit(main())
