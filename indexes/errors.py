"""Domain errors of ragsvc. Every package raises these; the API maps each class to one HTTP status."""


class RagsvcError(Exception):
    """Base of every error a user can cause or fix; `code` is the stable machine-readable name."""

    code = "ragsvc_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CollectionNotFound(RagsvcError):
    code = "collection_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"collection {name!r} does not exist")
        self.name = name


class InvalidCollectionName(RagsvcError):
    code = "invalid_collection_name"


class EmbeddingMismatch(RagsvcError):
    """A collection's index was built by another model, size or chunking than the one asked to use it."""

    code = "embedding_mismatch"


class StoreBusy(RagsvcError):
    """The embedded store's data dir is owned by another process."""

    code = "store_busy"


class InvalidRequest(RagsvcError):
    code = "invalid_request"


class IndexNotFound(RagsvcError):
    """A physical index that the engine does not hold (never created, or dropped)."""

    code = "index_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"index {name!r} does not exist")
        self.name = name


class IndexExists(RagsvcError):
    code = "index_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"index {name!r} already exists")
        self.name = name


class VectorSizeMismatch(EmbeddingMismatch):
    """A vector of another size than the index holds: it would mix vector spaces, so it is refused."""

    code = "vector_size_mismatch"

    def __init__(self, name: str, expected: int, given: int) -> None:
        super().__init__(f"index {name!r} holds {expected}-d vectors, got a {given}-d vector")
        self.name = name
        self.expected = expected
        self.given = given


class EngineUnavailable(RagsvcError):
    """The vector engine cannot be reached (a Qdrant server down or refusing the connection)."""

    code = "engine_unavailable"


class IndexBuildFailed(EngineUnavailable):
    """Building an index's HNSW graph failed (its build process died or timed out); the index keeps
    serving as it was, by brute force, and a later build may succeed."""

    code = "index_build_failed"
