"""Test data, not tests: keep pytest (and ``--doctest-modules``) from importing it."""

collect_ignore = ["quickstart_skeleton.py"]
