"""The HTTP API: thin routers that translate HTTP to service calls and back."""
