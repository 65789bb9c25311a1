"""Bad configuration stops start-up with one clear line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("upstream: http://file:1\nlisten: 127.0.0.1:1000\nmax_body_bytes: 4096\n")
    monkeypatch.setenv("CONTAINMENT_LISTEN", "127.0.0.1:2000")
    monkeypatch.setenv("CONTAINMENT_ADMIN_TOKENS", "a:viewer:aaaaaaaaaaaaaaa,b:commander:bbbbbbbbbbbbbbbb:with:colons")
    settings = load_settings({"max_body_bytes": 8192}, config)
    assert settings.upstream == "http://file:1"
    assert str(settings.listen) == "127.0.0.1:2000"
    assert settings.max_body_bytes == 8192
    assert [t.token for t in settings.admin_tokens] == ["aaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb:with:colons"]


def test_routes_from_yaml(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "routes:\n"
        "  - {name: chat, path_prefix: /v1/chat, upstream: 'http://a:1'}\n"
        "  - {name: big, path_prefix: /v1, upstream: 'http://b:1', models: [big-model]}\n"
    )
    settings = load_settings({}, config)
    assert [r.name for r in settings.effective_routes()] == ["chat", "big"]


@pytest.mark.parametrize(
    "flags,env,message",
    [
        ({}, {}, "upstream: required unless routes are configured"),
        ({"upstream": "ftp://x"}, {}, "upstream: must be an http:// or https:// URL"),
        ({"upstream": "http://x", "listen": "nope"}, {}, "listen: must be HOST:PORT"),
        ({"upstream": "http://x", "max_body_bytes": 5}, {}, "max_body_bytes: Input should be greater than or equal"),
        ({"upstream": "http://x"}, {"CONTAINMENT_ADMIN_TOKENS": "a:king:aaaaaaaaaaaaaaa"}, "unknown role 'king'"),
        ({"upstream": "http://x"}, {"CONTAINMENT_ADMIN_TOKENS": "a:viewer:short"}, "shorter than 12"),
        ({"upstream": "http://x"}, {"CONTAINMENT_WORKERS": "many"}, "workers: Input should be a valid integer"),
    ],
)
def test_bad_values_are_one_clear_line(
    flags: dict[str, object], env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(flags)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_yaml_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("upstream: [unclosed\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings({}, config)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings({}, tmp_path / "missing.yaml")
