"""The command line: ``hooklab ...`` / ``python -m hooklab ...`` (:func:`hooklab.cli.main.main`)."""
