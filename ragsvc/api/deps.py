"""FastAPI dependencies: route signatures name the resources and the caller they use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from indexes.registry import Registry
from ragsvc.api.auth import IdentityDep, principal_of
from ragsvc.jobs.queue import JobQueue
from ragsvc.owner import OWNER_TOKEN_HEADER
from ragsvc.service.access import Principal
from ragsvc.service.runtime import Runtime
from ragsvc.settings import Settings


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


def get_registry(runtime: RuntimeDep) -> Registry:
    return runtime.registry


def get_jobs(runtime: RuntimeDep) -> JobQueue:
    return runtime.jobs


def get_principal(identity: IdentityDep, request: Request) -> Principal:
    """The caller's scope, from the credential the request authenticated with (ragsvc.api.auth): the local,
    all-rights user while auth is off; a 401 has been answered already when it had none."""
    return principal_of(request.app.state.access.db, identity)


def is_machine_local(
    runtime: RuntimeDep, token: Annotated[str | None, Header(alias=OWNER_TOKEN_HEADER)] = None
) -> bool:
    return runtime.lock.is_owner_token(token)


MachineLocalDep = Annotated[bool, Depends(is_machine_local)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
