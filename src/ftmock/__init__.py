"""Reference server: a Candlepin-compatible subset with fault-tolerance and lease support."""

__all__ = ["__version__"]

__version__ = "0.1.0"
