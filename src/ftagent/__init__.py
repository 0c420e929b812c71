"""Guest agent library: identity, entitlements, failover handling and the FT lease."""

__all__ = ["__version__"]

__version__ = "0.1.0"
