"""`python -m catdog.cli`, as `python -m catdog`."""

from catdog.cli import main

main()
