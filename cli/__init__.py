"""The diffinv command-line interface (Typer). Thin: options → config → one library call."""
