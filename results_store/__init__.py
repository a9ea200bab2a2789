"""Postgres: schema migrations and the durable store for results and archives."""
