"""FastAPI dependencies: route signatures name the resources they use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from ragsvc.owner import OWNER_TOKEN_HEADER
from ragsvc.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


def is_machine_local(
    services: ServicesDep, token: Annotated[str | None, Header(alias=OWNER_TOKEN_HEADER)] = None
) -> bool:
    return services.lock.is_owner_token(token)


MachineLocalDep = Annotated[bool, Depends(is_machine_local)]
