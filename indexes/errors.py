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
