"""`python -m cnndsl`: the same as the `cnndsl` command."""

import sys

try:
    from cnndsl.cli import run
except KeyboardInterrupt:  # Ctrl-C before the command line installed its handler
    print("cnndsl: interrupted", file=sys.stderr)
    raise SystemExit(130) from None

if __name__ == "__main__":  # not in a worker process that re-imports the main module (spawn)
    run()
