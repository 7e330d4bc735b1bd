"""The HTTP search API (FastAPI): SQL-like search and question selection over memories.

Run with ``vmem serve``; behind Ray Serve or any ASGI server the same app scales out.
Bad SQL or a bad filter is a 400 whose ``detail`` names the problem.
"""

from __future__ import annotations

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from actors.query import QueryStage
from schemas.records import Question
from storage.sql import SqlError


class SqlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sql: str = Field(min_length=1, description="one SELECT over memories or videos")


def _jsonable_rows(rows: list[dict]) -> list[dict]:
    return [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in r.items()} for r in rows
    ]


def create_app(stage: QueryStage) -> FastAPI:
    """The ASGI app over one query stage (its model and store load on first use)."""
    app = FastAPI(title="VMem memory search", version="0.1.0")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "encoder": stage.encoder}

    @app.post("/sql")
    def sql(request: SqlRequest) -> dict:
        try:
            table = stage.sql(request.sql)
        except SqlError as exc:
            raise HTTPException(status_code=400, detail=f"SQL error: {exc}") from exc
        return {"columns": table.column_names, "rows": _jsonable_rows(table.to_pylist())}

    @app.post("/ask")
    def ask(question: Question) -> dict:
        result = stage.select([question])[0]
        if result.error is not None:
            raise HTTPException(status_code=400, detail=str(result.error))
        clips = [clip.as_row() for clip in result.clips]
        return {"question": result.question, "clips": clips}

    return app
