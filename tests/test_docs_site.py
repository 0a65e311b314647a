"""The docs site at /site/: every link a citation of the demo collection carries opens a rendered page that has
the cited section's id, without a key; a missing page is a 404 like any other."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from ragsvc.service import ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.settings import Settings
from tests.conftest import SAMPLE_DOCS, app_client

SITE = "http://testserver/site"


def _site_client(settings: Settings, **extra: object) -> TestClient:
    return app_client(settings.model_copy(update={"docs_site_dir": SAMPLE_DOCS, **extra}))


def test_every_citation_link_of_the_docs_opens_the_cited_section(settings: Settings, runtime):
    ingestion.ingest_folder(runtime, LOCAL, "docs", SAMPLE_DOCS, docs_base_url=SITE)
    links = {
        s.link
        for question in (
            "delete a collection",
            "re-ingest a folder",
            "embedding model",
            "configuration",
            "cli",
        )
        for s in retrieval.search(runtime, LOCAL, "docs", question, top_k=20)
    }
    runtime.close()
    assert len(links) > 20
    with _site_client(settings) as client:
        for link in sorted(links):
            assert link and link.startswith(SITE), link
            url = urlsplit(link)
            page = client.get(url.path)
            assert page.status_code == 200, link
            assert page.headers["content-type"].startswith("text/html")
            if url.fragment:
                assert f'id="{url.fragment}"' in page.text, link


def test_the_deleting_section_is_a_heading_of_its_rendered_page(settings: Settings):
    with _site_client(settings) as client:
        page = client.get("/site/guides/collections/")
        reference = client.get("/site/reference/cli.html")
    assert page.status_code == 200
    assert re.search(r'<h2 id="deleting-a-collection">Deleting a collection</h2>', page.text)
    # Links between pages lead to the site's pages, not to the Markdown files.
    assert 'href="/site/concepts/embedding-models/"' in page.text
    # reStructuredText pages too, Sphinx's :doc: links included.
    assert reference.status_code == 200 and "<h1" in reference.text
    assert 'href="/site/' in reference.text


def test_pages_open_without_a_key_while_the_api_asks_for_one(settings: Settings):
    with _site_client(settings, auth="on") as client:
        assert client.get("/site/").status_code == 200
        assert client.get("/collections").status_code == 401


def test_a_missing_page_or_a_path_out_of_the_folder_is_a_404(settings: Settings):
    with _site_client(settings) as client:
        for path in ("/site/nothing-here/", "/site/../pyproject.toml", "/site/%2e%2e/README.md"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.json()["error"]["code"] in ("page_not_found", "not_found")


def test_without_the_setting_there_is_no_site(client: TestClient):
    assert client.get("/site/").status_code == 404
