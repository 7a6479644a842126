"""ACME (RFC 8555) use cases: verified requests and nonces, accounts and EAB credentials,
orders through finalization and revocation, and challenge validation in the background."""
