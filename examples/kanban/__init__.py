"""The kanban example: a command service with mutation events and an audit consumer (see README.md)."""
