"""Numbered migrations: ``NNNN_name.sql`` files, or ``NNNN_name.py`` modules with ``sql()``.

Python migrations exist for SQL that another package owns, such as Procrastinate's schema,
so it is applied from the pinned package instead of copied here.
"""
