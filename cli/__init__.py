"""The `specdiff` command line."""
