"""``python -m ftagent``."""

from ftagent.cli import main

__all__: list[str] = []

main()
