"""Sync active INFIMA user counts onto Autotask PSA Contract Services."""

__version__ = "0.1.0"
