"""Hypervisor reporter: collects hosts and guests (with FT data) and posts hypervisor reports."""

__all__ = ["__version__"]

__version__ = "0.1.0"
