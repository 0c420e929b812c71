"""`python -m ftmock`."""

from .cli import main

if __name__ == "__main__":  # importing the module (rpm %check) must not run the CLI
    main()
