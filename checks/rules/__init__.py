"""Lint rules, one per module named `saNNN_<slug>.py`; IDs are never reused."""
