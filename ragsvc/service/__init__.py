"""The service layer: every operation on ragsvc's data, once, for every front end (REST, /v1, the CLI, MCP).

One module per resource: `collections` (list, describe, delete), `ingestion` (the only place that creates a
collection or builds an index after an ingest), `documents` (uploads), `reindex`, `retrieval`, `answers`,
`embeddings`, `jobs`. Each is a set of plain functions over one long-lived `runtime.Runtime`, which
`factory.open_runtime` builds complete (jobs included) and which has no behaviour of its own.

The access contract (what a new front end and ragsvc's access control rely on):
- Every entry point takes `(runtime, caller, ...)`: `caller` is an `access.Principal`, the scope the
  front end resolved from the credential (never from the request). Front ends without credentials pass
  `access.LOCAL`, the all-rights local user; the API gets it from `ragsvc.api.deps.PrincipalDep`.
- Before it touches a collection, its documents or its jobs, an entry point calls `access.require(caller,
  collection, Right.read | write | admin)`, the one check. A collection the caller may not read raises
  `CollectionNotFound`, exactly as a missing one does; a job of such a collection raises `JobNotFound`.
  Listings (`list_collections`, `list_jobs`) keep only what the caller may read.
- A job records the principal that submitted it (`Job.principal`, stored, never shown) and its handler runs
  the same entry point with it, so a job can do no more than its submitter could.
- Functions without a `caller` (`retrieval.retrieve`, `embeddings.embedder_for`, `repair.*`, ...) work on a
  collection an entry point has already checked; front ends never call them.
- Errors are `RagsvcError`s with a stable `code`; each front end maps them in one table
  (ragsvc.api.errors for HTTP, ragsvc.cli_errors for the CLI).
"""
