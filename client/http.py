"""A thin client of the search service's HTTP API (``vmem serve``), with the Archive's
method names and results:

    from client import HttpClient

    api = HttpClient("http://127.0.0.1:8000", api_key="vmk_...")   # `vmem keys create`
    api.ask("a red circle?", answer=True).videos[0].clips
    api.sql("SELECT video_id, COUNT(*) FROM memories GROUP BY video_id").to_pandas()

Paged answers (``next_page_token``) are followed to the end. Errors come back as the
same ``client.errors`` classes: a refused key as AuthError, a bad question or SQL as
QueryError, storage the server cannot reach as StorageFailure, anything else (and a
server that cannot be reached) as ServiceError, each with the server's one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from client.batch import question_items
from client.errors import AuthError, QueryError, ServiceError, StorageFailure, VMemError
from client.results import AskResult
from schemas.records import QueryResult, Question, StageError

MAX_PAGES = 10_000  # a guard against a server that never stops paging


class HttpClient:
    """The HTTP API of one search service, authenticated by one API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        """``http``: an httpx client to send through (tests pass the app's TestClient)."""
        self.base_url = base_url.rstrip("/")
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def __repr__(self) -> str:
        return f"HttpClient({self.base_url!r})"

    # ---- the Archive's methods ----------------------------------------------------------
    def ask(
        self, question: str, where: str | None = None, k: int | None = None, answer: bool = False
    ) -> AskResult:
        """``POST /v1/search``: the videos that fit, best first, with their clips."""
        body: dict[str, Any] = {"question": question, "answer": answer}
        body.update({key: v for key, v in (("where", where), ("k", k)) if v is not None})
        return AskResult.from_json(question, self._pages("POST", "/v1/search", body))

    def sql(self, query: str) -> pa.Table:
        """``POST /v1/sql``: every page of the statement's rows as one table."""
        pages = self._pages("POST", "/v1/sql", {"query": query})
        columns = pages[0]["columns"] if pages else []
        rows = [row for page in pages for row in page["rows"]]
        return pa.table({c: [row.get(c) for row in rows] for c in columns})

    def videos(self, status: str | None = None) -> pa.Table:
        """``GET /v1/videos``: the catalog as the service shows it (every page)."""
        params = {"status": status} if status is not None else {}
        pages = self._pages("GET", "/v1/videos", params)
        return pa.Table.from_pylist([video for page in pages for video in page["videos"]])

    def answer(
        self, questions: list[str] | list[Question] | str | Path, generate: bool = False
    ) -> pa.Table:
        """A batch, one ``/v1/search`` per question (the service's batch endpoint is not
        used yet), as ``Archive.answer``'s table; a question the service refuses becomes
        a failed row with its error, and the batch goes on (a refused key stops it)."""
        from flows.answer import result_rows

        results: list[QueryResult] = []
        for item in question_items(questions):
            if isinstance(item, QueryResult):
                results.append(item)
                continue
            try:
                hit = self.ask(item.question, item.where, item.k, answer=generate)
            except AuthError:
                raise
            except VMemError as exc:
                error = StageError("search", str(exc))
                results.append(QueryResult(item.question, item.id, error=error))
                continue
            results.append(hit.to_query_result(item.id))
        return result_rows(results)

    def thumbnail(self, video_id: str, clip_index: int) -> bytes:
        """``GET /v1/clips/{video_id}/{clip_index}/thumbnail.jpg``: the JPEG's bytes."""
        response = self._send("GET", f"/v1/clips/{video_id}/{clip_index}/thumbnail.jpg")
        return response.content

    # ---- transport -----------------------------------------------------------------------
    def _pages(self, method: str, path: str, payload: dict[str, Any]) -> list[dict]:
        """Every page of a paged endpoint, following ``next_page_token``."""
        pages: list[dict] = []
        token = None
        for _ in range(MAX_PAGES):
            if method == "GET":
                params = {**payload, **({"page_token": token} if token else {})}
                page = self._send(method, path, params=params).json()
            else:
                body = {**payload, **({"page_token": token} if token else {})}
                page = self._send(method, path, json=body).json()
            pages.append(page)
            token = page.get("next_page_token")
            if not token:
                return pages
        raise ServiceError(f"{path} kept paging past {MAX_PAGES} pages", 0, "too_many_pages")

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        url = path if self.http.base_url else f"{self.base_url}{path}"
        try:
            response = self.http.request(method, url, headers=self.headers, **kwargs)
        except httpx.TimeoutException as exc:
            message = f"{self.base_url} did not answer in time ({exc})"
            raise ServiceError(message, 0, "timeout") from exc
        except httpx.HTTPError as exc:
            raise ServiceError(f"cannot reach {self.base_url}: {exc}") from exc
        if response.is_success:
            return response
        raise _error(response)


def _error(response: httpx.Response) -> VMemError:
    """The service's ``{"error": {"code", "message"}}`` as the matching error class."""
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", f"HTTP {response.status_code}: {response.text[:200]}"
    status = response.status_code
    if status in (401, 403):
        return AuthError(message, status, code)
    if status in (400, 422):
        return QueryError(message)
    if status == 503 and code.startswith("storage"):
        return StorageFailure(message)
    return ServiceError(message, status, code)
