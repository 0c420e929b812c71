"""``python -m ftreport``."""

from .cli import main

__all__: list[str] = []

main()
