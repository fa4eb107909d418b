"""Asyncio client for WedSync Gateway, on pycrdt."""
