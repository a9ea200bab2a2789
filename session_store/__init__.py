"""The event-sourcing core: events, the projector, JSON Patch, the Redis layout and append."""
