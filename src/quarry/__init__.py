"""quarry: a self-hosted retrieval and LLM service."""

__version__ = "0.1.0"
