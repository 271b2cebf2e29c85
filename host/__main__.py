"""`python -m host` runs the host CLI."""

from host.cli import main

main()
