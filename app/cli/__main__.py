"""`python -m app.cli` runs the `mintca` command."""

from app.cli.main import main

main()
