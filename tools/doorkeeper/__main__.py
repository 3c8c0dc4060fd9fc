"""`python -m doorkeeper ...` is the `doorkeeper` command (works even where pip's script
directory is not on PATH)."""

from doorkeeper.tools.cli import main

main()
