"""Parse, chunk and embed documents into collections; ingestion jobs."""
