from __future__ import annotations

import pytest

from storage.uri import is_s3, join, lance_options, s3_client, split_s3


def test_is_s3_and_split():
    assert is_s3("s3://bucket/a/b.mp4") and not is_s3("/data/s3/a.mp4")
    assert split_s3("s3://bucket/a/b.mp4") == ("bucket", "a/b.mp4")
    assert split_s3("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="not an s3"):
        split_s3("/local/path")
    with pytest.raises(ValueError, match="without a bucket"):
        split_s3("s3:///key")


def test_join_local_and_s3(tmp_path):
    assert join("s3://b/db/", "memories.lance", "x") == "s3://b/db/memories.lance/x"
    assert join(str(tmp_path), "db", "t") == str(tmp_path / "db" / "t")


def test_lance_options_fill_from_env_and_aliases(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    opts = lance_options({"region": "us-east-1", "aws_secret_access_key": "s"})
    assert opts["aws_endpoint"] == "http://127.0.0.1:9"
    assert opts["allow_http"] == "true"  # an http:// endpoint needs it
    assert opts["aws_access_key_id"] == "env-key"
    assert opts["aws_region"] == "us-east-1"  # given options win over the environment
    assert "region" not in opts


def test_lance_options_https_needs_no_allow_http(monkeypatch):
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)
    opts = lance_options({"aws_endpoint": "https://s3.example.com"})
    assert "allow_http" not in opts


def test_s3_client_uses_the_same_options():
    client = s3_client({"aws_endpoint": "http://127.0.0.1:9", "aws_region": "us-east-1"})
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert client.meta.region_name == "us-east-1"
