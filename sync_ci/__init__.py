"""sync-ci: feedback loops and launch gates for an S3-compatible sync layer."""

__version__ = "0.1.0"
