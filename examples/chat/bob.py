"""Bob, one of the two chat agents: ``shipkit run examples.chat.bob:service``."""

from __future__ import annotations

from examples.chat.agent import Script, make_agent

service = make_agent(
    "bob",
    Script(
        greeting="Bob here, just joined #general.",
        lines=[
            "Hi {peer}, Bob here! Shall we go through the launch checklist?",  # answering {peer}'s greeting
            "Hey {peer}! Sure, the checklist it is.",
            "Navigation and fuel check out here. We are go.",
            "Perfect. Signing off until launch, {peer}!",
        ],
    ),
)
