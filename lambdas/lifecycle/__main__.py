"""``python -m lambdas.lifecycle``: the platform team's commands (see ``cli``)."""

from lambdas.lifecycle.cli import main

raise SystemExit(main())
