"""ragsvc: a self-hosted RAG knowledge-base service."""

__version__ = "0.1.0"
