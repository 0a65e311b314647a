"""Physical vector indexes keyed by embedding model and size, the collection registry, and search."""
