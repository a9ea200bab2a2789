"""The API gateway: HTTP, participant WebSockets, fan-out of committed changes."""
