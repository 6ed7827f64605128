"""Smoke tests of the test control plane and the local pod executor."""
