"""``python -m diffinv``: the diffinv command line (also what ``torchrun -m diffinv`` runs)."""

from cli.entry import main

main()
