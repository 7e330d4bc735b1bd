from __future__ import annotations

from typer.testing import CliRunner

from cli.app import app


def test_train_refuses_a_bad_config_with_a_named_field(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("steps: -3\nno_such_field: 1\n")
    result = CliRunner().invoke(app, ["train", "--config", str(config), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "no_such_field" in result.output
    assert not (tmp_path / "o").exists()
