"""``python -m edgeml``: the same entry point as the ``edgeml`` console script."""

from edgeml.cli import main

raise SystemExit(main())
