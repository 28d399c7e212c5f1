"""``python -m pynumaflow``: the ``pynumaflow`` command."""

import sys

from pynumaflow._cli import main

if __name__ == "__main__":
    sys.exit(main())
