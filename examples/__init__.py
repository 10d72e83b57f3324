"""Runnable shipkit examples; each directory has a README saying how to run it.

Run them from the repository root, e.g. ``shipkit run examples.kanban.app:service`` or
``python -m examples.kanban.demo``.
"""
