"""A module holding two services, so ``MODULE`` alone is ambiguous."""

from __future__ import annotations

from shipkit import Service

first = Service("first")
second = Service("second")
