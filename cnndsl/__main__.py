"""`python -m cnndsl`: the same as the `cnndsl` command."""

from cnndsl.cli import run

run()
