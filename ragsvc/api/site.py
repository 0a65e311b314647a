"""The docs site: RAGSVC_DOCS_SITE_DIR's pages rendered at /site/, where the demo's citation links point.

Open without a key (a browser following a citation link sends none): only for documentation that is public
to whoever can reach the API. Without the setting there is no /site.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from ragsvc.docs_site import SITE_PREFIX, DocsSite

router = APIRouter(prefix=SITE_PREFIX, tags=["docs site"], include_in_schema=False)


def get_site(request: Request) -> DocsSite:
    return request.app.state.docs_site


SiteDep = Annotated[DocsSite, Depends(get_site)]


@router.get("")
def site_root() -> RedirectResponse:
    return RedirectResponse(f"{SITE_PREFIX}/")


@router.get("/{path:path}", response_class=HTMLResponse)
async def page(path: str, site: SiteDep) -> HTMLResponse:
    found = await run_in_threadpool(site.page, path)
    return HTMLResponse(found.html)
