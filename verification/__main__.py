"""``python -m verification``: the accuracy report (:mod:`verification.report`)."""

import sys

from verification.report import main

if __name__ == "__main__":
    sys.exit(main())
