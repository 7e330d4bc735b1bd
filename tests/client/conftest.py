"""The service's tiny database (three done videos, one failed; the trained default), an
Archive over it, and the service's app over it for the HTTP client."""

from __future__ import annotations

import pytest

from tests.service.conftest import Service, TinyDb, make_service, media_db, tiny_db  # noqa: F401


@pytest.fixture(scope="session")
def archive(tiny_db: TinyDb):  # noqa: F811
    from client.archive import Archive

    return Archive.open(config=tiny_db.cfg)


@pytest.fixture(scope="session")
def service(tiny_db: TinyDb) -> Service:  # noqa: F811
    """Pages of two rows and two videos, so the client must follow page tokens."""
    return make_service(tiny_db, page_size=2, search_page_videos=2)
