"""``python -m runai_entry`` is the same as the ``runai-entry`` command."""

from runai_entry.cli import main

main()
