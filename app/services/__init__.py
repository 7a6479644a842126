"""Use cases: the order of steps, transactions, audit records and caches. No HTTP types."""
