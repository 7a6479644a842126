"""The `mintca` command: composition root for init/serve/db, and HTTP client commands."""
