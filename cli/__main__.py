"""``python -m cli``: the diffinv command line (see cli.entry)."""

from cli.entry import main

main()
