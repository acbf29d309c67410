"""The ``rtrace-collect`` console script: the collector's command line, run
inside this interpreter by the extension (the same code as the
``rtrace-collect`` binary built by cargo)."""

import signal
import sys

from . import _native


def main() -> int:
    # The collector finishes its file on SIGINT (Ctrl-C) through a handler
    # of its own, which also calls the handler it replaced. Python's would
    # leave a KeyboardInterrupt pending, raised as soon as the collector
    # returns: a traceback and status 130 after a clean finish.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    return _native.collect_main(["rtrace-collect", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
