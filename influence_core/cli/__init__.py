"""Command line: ``python -m influence_core COMMAND``; subcommands are imported only when run."""
