"""``python -m miascale.cli``."""

from miascale.cli import main

main()
