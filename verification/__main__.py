"""``python -m verification``: the accuracy report (:mod:`verification.report`)."""

import sys

from poincare._optional import MissingDependencyError

try:
    from verification.report import main
except MissingDependencyError as e:  # the one line, no traceback
    sys.exit(f"python -m verification: error: {e}")

if __name__ == "__main__":
    sys.exit(main())
