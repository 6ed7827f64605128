"""Fixtures shared by the whole suite live in tests/support; this file only registers them."""

pytest_plugins = ["tests.support.services", "tests.support.cluster", "tests.support.images", "tests.support.kueue"]
