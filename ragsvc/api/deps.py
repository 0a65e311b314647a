"""FastAPI dependencies: route signatures name the resources and the caller they use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from indexes.registry import Registry
from ragsvc.jobs.queue import JobQueue
from ragsvc.service.access import LOCAL, Principal
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


def get_principal() -> Principal:
    """The caller's scope. Without access control every caller is the local, all-rights user; access control
    replaces this body with the principal of the request's key (and a 401 when it has none)."""
    return LOCAL


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
JobsDep = Annotated[JobQueue, Depends(get_jobs)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
