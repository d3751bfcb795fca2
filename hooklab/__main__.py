"""``python -m hooklab``: the command-line interface."""

from hooklab.cli.main import main

raise SystemExit(main())
