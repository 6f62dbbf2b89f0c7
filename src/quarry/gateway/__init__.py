"""The model gateway: every model call in quarry goes through ``quarry.gateway.gateway.Gateway``.

This package's ``__init__`` stays empty of imports: ``quarry.settings`` reads
``quarry.gateway.config``, and importing the gateway itself from here would make settings load
the providers' SDKs.
"""
