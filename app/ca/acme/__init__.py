"""ACME (RFC 8555) rules with no I/O: JWS and JWK (RFC 7515/7517/7638), key authorizations
and identifiers."""
