"""Pure PKI: X.509 rules and construction with cryptography and the stdlib only (no I/O)."""
