"""API keys: making them, storing them hashed, and turning a request's key into a Principal."""
