"""`python -m audioclip_search.cli` runs the `acsearch` command."""

from .app import main

main()
