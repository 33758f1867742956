"""Performance measurements with ratios against reference tools: `python -m benchmarks [NAME]`."""
