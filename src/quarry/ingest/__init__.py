"""Ingestion: parse -> split -> embed -> write, one crash-safe job per document."""
