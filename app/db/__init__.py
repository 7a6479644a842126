"""Storage: tables, column types, queries and locks. Never policy, never commits."""
