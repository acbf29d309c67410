"""The ``rtrace-collect`` console script: the collector's command line, run
inside this interpreter by the extension (the same code as the
``rtrace-collect`` binary built by cargo)."""

import sys

from . import _native


def main() -> int:
    return _native.collect_main(["rtrace-collect", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
