"""FastAPI dependencies: route signatures name the resources they use."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from ragsvc.services import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]
