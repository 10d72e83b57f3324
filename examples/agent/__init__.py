"""The agent example: being registry, heartbeats and ship_config (see README.md)."""
