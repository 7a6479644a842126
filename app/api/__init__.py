"""HTTP: decoding requests, representations, caching headers, error mapping, route lists."""
