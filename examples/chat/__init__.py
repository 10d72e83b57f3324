"""The chat example: two agents, Alice and Bob, talking over a channel (see README.md)."""
