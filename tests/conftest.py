"""Every test gets a real nats-server through the shipkit.testing fixtures."""

pytest_plugins = ["shipkit.testing"]
