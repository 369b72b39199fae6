"""``edgeml``: one command line for the platform's common jobs (see ``edgeml.cli``)."""
