"""``python -m ftreport``."""

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":  # importing the module (rpm %check) must not run the CLI
    main()
