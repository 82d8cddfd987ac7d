"""Dragon's infrastructure types that user code names (Policy, PMIBackend)."""
