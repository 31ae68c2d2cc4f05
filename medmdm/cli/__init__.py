"""The ``medmdm`` command line."""
