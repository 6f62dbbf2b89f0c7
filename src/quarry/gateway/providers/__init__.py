"""One module per provider; each registers itself with ``quarry.gateway.registry.register``."""
