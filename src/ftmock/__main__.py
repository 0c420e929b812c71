"""`python -m ftmock`."""

from .cli import main

main()
