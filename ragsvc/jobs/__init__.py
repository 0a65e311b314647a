"""Durable jobs for every kind of long work (ingesting a folder or uploads, reindexing): records with leases
in SQLite or Redis, delivered at least once by a Huey queue. Nothing here knows what a job does."""
