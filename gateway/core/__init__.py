"""Sans-I/O core: protocol codec, sessions, rooms. No asyncio, no sockets, no settings."""
