"""shipkit: a declarative agent-service framework over NATS."""
