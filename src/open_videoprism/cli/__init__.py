"""The ``videoprism`` command line. Each subcommand lives in its own module."""
