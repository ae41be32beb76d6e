"""Retrieval: passage indexes (and, as they come, the retriever and the FiD reader)."""
