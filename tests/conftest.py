"""Shared fixtures. Lab fixtures live in tests/lab/conftest.py."""
