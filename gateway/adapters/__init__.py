"""Implementations of the ports: embedded defaults (memory bus, SQLite store) and services."""
