"""The `notify` config section (SPEC §11): strict validation with every problem at once, URL
safety as for credentials (without printing the token), and kept when the tool rewrites the
file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import make_config, write_config

from infima_autotask.config import (
    Config,
    EmailSettings,
    NotifySettings,
    config_to_dict,
    dump_config,
    load_config,
    parse_config,
    save_config,
)
from infima_autotask.errors import ConfigError

EXAMPLE = Path(__file__).parents[1] / "config.example.yaml"
TOKEN = "T0A1B2C3D/B0E1F2G3H/XyZsecretToken123"
SLACK = f"https://hooks.slack.com/services/{TOKEN}"
MAPPING = {
    "client_id": 101,
    "account_id": 5001,
    "contract_id": 6001,
    "contract_service_id": 7101,
    "service_id": 30012,
}
FULL = {
    "webhook_url": SLACK,
    "webhook_format": "slack",
    "healthcheck_url": "https://hc-ping.com/3f1b2c4d-0000-4000-8000-123456789abc",
    "dry_runs": True,
    "email": {
        "host": "smtp.example.com",
        "port": 587,
        "username": "billing-bot@example.com",
        "from": "billing-bot@example.com",
        "to": ["billing@example.com", "ops@example.com"],
    },
}


def doc(notify) -> dict:
    return {"version": 1, "notify": notify, "mappings": [MAPPING]}


def problems(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "/etc/cfg.yaml")
    assert info.value.exit_code == 2
    return info.value.details


def test_full_section_parses():
    notify = parse_config(doc(FULL), "x").notify
    assert notify == NotifySettings(
        webhook_url=SLACK,
        webhook_format="slack",
        healthcheck_url=FULL["healthcheck_url"],
        dry_runs=True,
        email=EmailSettings(
            host="smtp.example.com",
            port=587,
            username="billing-bot@example.com",
            sender="billing-bot@example.com",
            to=("billing@example.com", "ops@example.com"),
        ),
    )
    assert TOKEN not in repr(notify)  # the URLs carry tokens


def test_absent_or_null_section_is_none_and_not_written():
    assert parse_config({"version": 1}, "x").notify is None
    assert parse_config({"version": 1, "notify": None}, "x").notify is None
    assert "notify" not in config_to_dict(Config())
    assert "notify" not in dump_config(Config())


def test_every_part_is_optional():
    notify = parse_config(doc({}), "x").notify
    assert notify == NotifySettings() and not notify.configured
    only_email = {"email": {"host": "mail.example.com", "from": "a@example.com", "to": ["b@x.io"]}}
    email = parse_config(doc(only_email), "x").notify.email
    assert email.port == 587 and email.username is None


def test_every_problem_at_once_with_key_paths():
    found = problems(
        doc(
            {
                "webhook_url": 42,
                "webhook_format": "discord",
                "healthcheck_url": "ftp://hc-ping.com/uuid",
                "dry_runs": "yes",
                "email": {
                    "host": "smtp example.com",
                    "port": 70000,
                    "username": "",
                    "from": "billing-bot",
                    "to": ["ok@example.com", "two@@example.com", 5],
                    "tls": True,
                },
                "webhok_url": None,
            }
        )
    )
    assert found == [
        "notify.webhok_url: unknown key; did you mean 'webhook_url'?",
        "notify.webhook_format: must be slack or teams, or null (generic JSON, or decided by the "
        "URL), got 'discord'",
        "notify.webhook_url: must be an https:// URL (http:// only to this machine: 127.0.0.1, "
        "localhost), or null, got 42",
        "notify.healthcheck_url: must be an https:// URL (http:// only to this machine: "
        "127.0.0.1, localhost), or null, got ftp://hc-ping.com/…",
        "notify.dry_runs: must be true or false, got 'yes'",
        "notify.email.tls: unknown key",
        "notify.email.host: must be a host name such as smtp.example.com, got 'smtp example.com'",
        "notify.email.port: must be a port number from 1 to 65535, got 70000",
        "notify.email.username: must be a non-empty string or null, got ''",
        "notify.email.from: must be an e-mail address (name@example.com), got 'billing-bot'",
        "notify.email.to[1]: must be an e-mail address (name@example.com), got 'two@@example.com'",
        "notify.email.to[2]: must be an e-mail address (name@example.com), got 5",
    ]


@pytest.mark.parametrize(
    "email,expected",
    [
        ({"from": "a@example.com", "to": ["b@example.com"]}, "notify.email.host: missing"),
        ({"host": "m.example.com", "to": ["b@example.com"]}, "notify.email.from: missing"),
        ({"host": "m.example.com", "from": "a@example.com"}, "notify.email.to: missing"),
        (
            {"host": "m.example.com", "from": "a@example.com", "to": "b@example.com"},
            "notify.email.to: must be a list of e-mail addresses",
        ),
        (
            {"host": "m.example.com", "from": "a@example.com", "to": []},
            "notify.email.to: must be a list of e-mail addresses",
        ),
        (
            {
                "host": "m.example.com",
                "from": "a@example.com\r\nBcc: x@evil.example",
                "to": ["b@x.io"],
            },
            "notify.email.from: must be an e-mail address",
        ),
        ("smtp.example.com", "notify.email: must be null or a mapping of keys"),
    ],
)
def test_email_problems(email, expected):
    (found,) = problems(doc({"email": email}))
    assert found.startswith(expected), found


@pytest.mark.parametrize(
    "url",
    [
        f"http://hooks.slack.com/services/{TOKEN}",  # plain http off this machine
        f"http://10.0.0.5/services/{TOKEN}",
        f"hooks.slack.com/services/{TOKEN}",
        f"https:///services/{TOKEN}",
        f"https://hooks.slack.com/services/{TOKEN}\n",
    ],
)
def test_unsafe_webhook_urls_are_refused_without_showing_the_token(url):
    (found,) = problems(doc({"webhook_url": url}))
    assert found.startswith("notify.webhook_url: must be an https:// URL")
    assert TOKEN not in found and "XyZsecret" not in found


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]:9/hook", SLACK],
)
def test_https_or_loopback_http_is_accepted(url):
    assert parse_config(doc({"webhook_url": url, "healthcheck_url": url}), "x").notify.webhook_url


def test_section_of_wrong_type():
    assert problems(doc(["webhook_url"])) == ["notify: must be a mapping of keys, got a list"]


def test_round_trip_and_save_keep_every_key_in_order(tmp_path):
    config = parse_config(doc(FULL), "x")
    assert parse_config(yaml.safe_load(dump_config(config)), "x") == config
    data = config_to_dict(config)
    assert list(data) == [
        "version",
        "state_dir",
        "autotask",
        "infima",
        "sync",
        "notify",
        "mappings",
    ]
    assert list(data["notify"]) == [
        "webhook_url",
        "webhook_format",
        "healthcheck_url",
        "dry_runs",
        "email",
    ]
    assert list(data["notify"]["email"]) == ["host", "port", "username", "from", "to"]
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert load_config(path) == config
    # username null is written as such, and read back the same
    bare = parse_config(
        doc({"email": {"host": "m.example.com", "from": "a@x.io", "to": ["b@x.io"]}}), "x"
    )
    assert "username: null" in dump_config(bare)
    assert parse_config(yaml.safe_load(dump_config(bare)), "x") == bare


def test_a_rewrite_by_the_tool_keeps_the_notify_section(invoke, config_path):
    """`unmap` rewrites the file (as `map` and `connect` do): the section must survive."""
    second = {**MAPPING, "client_id": 102, "contract_service_id": 7102}
    write_config(config_path, make_config([MAPPING, second], notify=FULL))
    result = invoke("unmap", "102")
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    assert written["notify"] == FULL
    assert [m["client_id"] for m in written["mappings"]] == [101]


def test_validate_reports_notify_problems(invoke, config_path):
    write_config(
        config_path, make_config([MAPPING], notify={"webhook_url": f"http://x.io/{TOKEN}"})
    )
    result = invoke("validate")
    assert result.exit_code == 2
    assert "  notify.webhook_url: must be an https:// URL" in result.stderr
    assert TOKEN not in result.output


def test_example_config_shows_the_section():
    config = load_config(EXAMPLE)
    assert config.notify == NotifySettings()  # every channel off until the operator fills it
    text = EXAMPLE.read_text(encoding="utf-8")
    for key in ("webhook_url:", "webhook_format:", "healthcheck_url:", "dry_runs:", "email:"):
        assert key in text
    assert "INFIMA_SMTP_PASSWORD" in text
