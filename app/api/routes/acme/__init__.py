"""ACME (RFC 8555) over HTTP: a sub-application mounted at /acme on the public listener (its
own problem documents and a fresh Replay-Nonce on every answer), and the admin route that makes
EAB credentials on the mtls listener."""
