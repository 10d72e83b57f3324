"""Alice, one of the two chat agents: ``shipkit run examples.chat.alice:service``."""

from __future__ import annotations

from examples.chat.agent import Script, make_agent

service = make_agent(
    "alice",
    Script(
        greeting="Hi, Alice here. Anyone on #general?",
        lines=[
            "Hi {peer}, welcome! Shall we go through the launch checklist?",  # answering {peer}'s greeting
            "Hi {peer}! Yes, let's do the launch checklist.",
            "Fuel and comms are green on my side.",
            "Great. Talk to you after launch, {peer}!",
        ],
    ),
)
