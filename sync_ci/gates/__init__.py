"""Pre-launch gates: load burst, cold-KV latency across regions, platform recordings."""
