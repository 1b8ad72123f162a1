"""`python -m cnndsl` runs the command-line interface."""

from cnndsl.cli import main

raise SystemExit(main())
