"""Answers over a project's documents: the token-budgeted context builder (and, to come, cited
answers, conversations and streaming)."""
