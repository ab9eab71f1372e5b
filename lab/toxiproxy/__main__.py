"""``python -m lab.toxiproxy``: run the built-in Toxiproxy-compatible server."""

from .cli import main

raise SystemExit(main())
