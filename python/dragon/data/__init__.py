"""Data services of the runtime: the distributed dictionary (dragon.data.ddict)."""
