"""API keys: made and revoked by the CLI, only a salted hash stored, checked on every
endpoint but /healthz (401 without a valid key, 403 for the wrong scope)."""

from __future__ import annotations

import json

import lance
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli.app import app as cli
from service.auth import API_KEYS, KeyStore, require, split_key
from service.errors import install_error_handlers
from storage.uri import join

from .conftest import make_service

READ_ENDPOINTS = [
    ("post", "/v1/search", {"question": "q"}),
    ("post", "/v1/sql", {"query": "SELECT video_id FROM videos"}),
    ("get", "/v1/videos", None),
    ("get", "/v1/videos/0123456789abcdef", None),
    ("get", "/v1/openapi.json", None),
    ("get", "/metrics", None),
]


def _call(client, method, path, body, headers=None):
    return getattr(client, method)(path, headers=headers or {}, **({"json": body} if body else {}))


def test_only_a_salted_hash_is_stored(tiny_db):
    store = KeyStore(tiny_db.cfg.storage)
    new = store.create("read")
    key_id, secret = split_key(new.key)
    assert key_id == new.key_id and len(secret) >= 43  # 32 random bytes, base64
    rows = lance.dataset(join(tiny_db.cfg.storage.db, f"{API_KEYS}.lance")).to_table()
    row = next(r for r in rows.to_pylist() if r["key_id"] == key_id)
    assert secret not in json.dumps(row, default=str) and len(row["secret_hash"]) == 64
    assert len({r["salt"] for r in rows.to_pylist()}) == rows.num_rows  # a salt per key
    assert store.scope_of(new.key) == "read"
    assert store.scope_of(new.key[:-1] + ("A" if new.key[-1] != "A" else "B")) is None
    assert store.scope_of(f"vmem_{'0' * 12}_{secret}") is None
    assert store.scope_of("not a key") is None


def test_every_endpoint_but_healthz_refuses_a_missing_wrong_or_revoked_key(tiny_db):
    service = make_service(tiny_db, keys_refresh_s=0.001)
    client = service.client
    assert client.get("/healthz").status_code == 200
    revoked = service.keys.create("read")
    revoked_auth = {"Authorization": f"Bearer {revoked.key}"}
    assert client.get("/v1/videos", headers=revoked_auth).status_code == 200
    service.keys.revoke(revoked.key_id)
    wrong = {"Authorization": "Bearer vmem_0123456789ab_" + "x" * 43}
    for method, path, body in READ_ENDPOINTS:
        for headers, code in [
            (None, "missing_key"),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_key"),
            (wrong, "invalid_key"),
            (revoked_auth, "invalid_key"),
        ]:
            response = _call(client, method, path, body, headers)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["code"] == code
            assert response.headers["www-authenticate"].startswith("Bearer")
        for headers in (service.read, service.write):  # write includes read
            assert _call(client, method, path, body, headers).status_code in (200, 404), path


def test_a_read_key_is_refused_where_write_is_needed(tiny_db):
    keys = KeyStore(tiny_db.cfg.storage)
    app = FastAPI()
    app.state.keys = keys
    install_error_handlers(app)

    @app.post("/v1/batches", dependencies=[Depends(require("write"))])
    def batches() -> dict:
        return {"ok": True}

    client = TestClient(app)
    read_key, write_key = keys.create("read").key, keys.create("write").key
    read = client.post("/v1/batches", headers={"Authorization": f"Bearer {read_key}"})
    assert read.status_code == 403
    assert read.json()["error"] == {
        "code": "forbidden",
        "message": "this endpoint needs a key of scope write; yours is read",
    }
    write = {"Authorization": f"Bearer {write_key}"}
    assert client.post("/v1/batches", headers=write).json() == {"ok": True}


def test_cli_creates_lists_and_revokes_keys(tiny_db):
    db = tiny_db.cfg.storage.db
    runner = CliRunner()
    made = runner.invoke(cli, ["keys", "create", "--scope", "write", "--db", db])
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    store = KeyStore(tiny_db.cfg.storage)
    assert store.scope_of(key) == "write"
    key_id = split_key(key)[0]
    listed = runner.invoke(cli, ["keys", "list", "--db", db, "--json"])
    rows = {r["key_id"]: r for r in map(json.loads, listed.output.strip().splitlines())}
    assert rows[key_id]["scope"] == "write" and rows[key_id]["revoked_at"] is None
    assert key not in listed.output and "hash" not in listed.output
    revoked = runner.invoke(cli, ["keys", "revoke", key_id, "--db", db])
    assert revoked.exit_code == 0 and key_id in revoked.output
    assert KeyStore(tiny_db.cfg.storage).scope_of(key) is None
    for args, words in [
        (["keys", "create", "--scope", "admin", "--db", db], "unknown scope 'admin'"),
        (["keys", "revoke", "feedfeedfeed", "--db", db], "no API key with id 'feedfeedfeed'"),
        (["keys", "list", "--db", f"{db}-missing"], "no database at"),
    ]:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2 and words in result.output, result.output
        assert "Traceback" not in result.output
