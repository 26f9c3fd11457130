"""``make bench``: every figure measured in the run, peers side by side (see bench/run.py)."""
