"""``python -m medmdm.cli``: the ``medmdm`` command."""

from medmdm.cli.main import entry_point

entry_point()
