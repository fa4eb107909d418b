"""WedSync Gateway: a real-time Yjs sync gateway for wedding documents."""

__version__ = "0.1.0"
