"""The ``semicompact`` command line (typer)."""
