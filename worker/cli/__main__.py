"""``python -m worker.cli``: the same as the ``orgsync`` command."""
from worker.cli import main

main()
