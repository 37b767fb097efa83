"""``python -m segrobust.cli benchmark ...``."""

import sys

from segrobust.cli import main

if __name__ == "__main__":
    sys.exit(main())
