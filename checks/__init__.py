"""The section-A lint catalogue: one rule per file under `checks/rules/`, found automatically."""
