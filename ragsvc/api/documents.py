"""Routes for documents (upload, list, get, delete) and for the jobs that ingest them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool

from ragsvc.api.deps import PrincipalDep, RuntimeDep
from ragsvc.api.errors import AUTH_ERRORS, errors
from ragsvc.api.schemas import CollectionName
from ragsvc.jobs.records import Job
from ragsvc.service import documents, jobs
from ragsvc.service.documents import Document, DocumentDeleted, UploadAccepted

router = APIRouter(tags=["documents"], responses=errors(*AUTH_ERRORS, 404, 422, 503))


@router.post("/collections/{name}/documents", status_code=202, responses=errors(400, 409, 413, 415))
async def upload_documents(
    name: CollectionName,
    request: Request,
    runtime: RuntimeDep,
    caller: PrincipalDep,
    files: Annotated[list[UploadFile], File(min_length=1, description="one or many documents")],
) -> UploadAccepted:
    """Store the files and start a job that ingests them; poll GET /jobs/{id}."""
    return await run_in_threadpool(
        documents.upload,
        runtime,
        caller,
        name,
        [(upload.filename, upload.file) for upload in files],
        declared_bytes=int(request.headers.get("content-length") or 0),
    )


@router.get("/collections/{name}/documents")
def list_documents(name: CollectionName, runtime: RuntimeDep, caller: PrincipalDep) -> list[Document]:
    return documents.list_documents(runtime, caller, name)


@router.get("/collections/{name}/documents/{source:path}")
def get_document(name: CollectionName, source: str, runtime: RuntimeDep, caller: PrincipalDep) -> Document:
    return documents.get_document(runtime, caller, name, source)


@router.delete("/collections/{name}/documents/{source:path}")
def delete_document(
    name: CollectionName, source: str, runtime: RuntimeDep, caller: PrincipalDep
) -> DocumentDeleted:
    """Delete a document: its chunks, its stored upload and its name in job records. 404 when it matched
    nothing; the answer says what it removed."""
    return documents.delete_document(runtime, caller, name, source)


@router.get("/jobs/{job_id}", tags=["jobs"])
def get_job(job_id: str, runtime: RuntimeDep, caller: PrincipalDep) -> Job:
    """The job's status and its `progress`: phase, files done of total, chunks written and files added,
    updated, unchanged, removed, skipped and failed so far (stored about twice a second while it runs, and
    at its end); the `summary`, with each failed file's reason, once it is done."""
    return jobs.get_job(runtime, caller, job_id)


@router.get("/jobs", tags=["jobs"])
def list_jobs(runtime: RuntimeDep, caller: PrincipalDep, collection: str | None = None) -> list[Job]:
    return jobs.list_jobs(runtime, caller, collection)
