"""``python -m hooklab``: the command-line interface."""

from hooklab.cli import main

raise SystemExit(main())
