"""The settings file has a schema: unknown keys, wrong types and secrets refused, with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_ci.config import load_settings
from sync_ci.config_file import check_config_file, key_lines, looks_secret
from sync_ci.errors import SettingsError
from tests.test_config import run_sync_ci

SHA = "0123456789abcdef0123456789abcdef01234567"


def problems_of(tmp_path: Path, text: str) -> list[str]:
    """Every problem the schema finds in a settings file holding `text`."""
    path = tmp_path / "sync-ci.toml"
    path.write_text(text, encoding="utf-8")
    return check_config_file(path)[1]


GOOD = """\
target = "ci"     # a comment
sha = "abcdef1"

[store]
bucket = "robert-storage"
endpoint_url = "https://fra1.digitaloceanspaces.com"
region = "fra1"
live_root = "snappy-os/"
ci_root = "snappy-os-ci/"

[worker]
url = "https://sync.example.com"
preview_url = ""
timeout_s = 10

[tenant]
id = "joe"

[[regions]]
name = "sjc"
url = "https://sync.example.com"
colo = "SJC"

[[regions]]
name = "fra"
url = "https://fra.sync.example.com/base"
colo = "fra"
proxy = "http://127.0.0.1:3128"
"""


def test_the_documented_file_passes(tmp_path: Path) -> None:
    assert problems_of(tmp_path, GOOD) == []
    path = tmp_path / "sync-ci.toml"
    settings = load_settings(
        config=str(path), env={"HOME": str(tmp_path)}, target="sandbox", check_remote=False
    )
    assert settings.worker_timeout_s == 10.0
    assert [(r.name, r.colo, r.proxy) for r in settings.regions] == [
        ("sjc", "SJC", ""),
        ("fra", "FRA", "http://127.0.0.1:3128"),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'targett = "ci"\n',
            "line 1: unknown key 'targett' at the top level; did you mean 'target'?",
        ),
        (
            '\n[store]\nbukcet = "b"\n',
            "line 3: unknown key 'bukcet' in [store]; did you mean 'bucket'?",
        ),
        ('[wrker]\nurl = "x"\n', "line 1: unknown key 'wrker' at the top level; did you mean"),
        (
            '[[regions]]\nname = "a"\nurl = "https://a"\ncolo = "A"\ncollo = "B"\n',
            "line 5: unknown key 'collo' in [[regions]] entry 1; did you mean 'colo'?",
        ),
        ("[store]\nzzz = 1\n", "line 2: unknown key 'zzz' in [store]; known keys: bucket,"),
        ("[worker]\ntimeout_s = '10'\n", "line 2: worker.timeout_s must be a number, not a string"),
        (
            "[worker]\ntimeout_s = true\n",
            "line 2: worker.timeout_s must be a number, not a boolean",
        ),
        ("[store]\nbucket = 5\n", "line 2: store.bucket must be a string, not an integer"),
        ('store = "x"\n', "line 1: store must be a table ([store]), not a string"),
        ("[regions]\nname = 'x'\n", "line 1: regions must be an array of tables ([[regions]])"),
        (
            'x = 1\n[[regions]]\nname = "a"\nurl = "https://a"\n',
            "line 2: [[regions]] entry 1 needs colo",
        ),
        ('store = { bucket = "b", bukcet = "c" }\n', "line 1: unknown key 'bukcet' in [store]"),
        ('[store]\n"bucket" = 1\n', "line 2: store.bucket must be a string"),
        ('a = """\n[store]\nbucket = 1\n"""\n[store]\nbukcet = 1\n', "line 6: unknown key"),
    ],
)
def test_schema_problems_name_the_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    found = problems_of(tmp_path, text)
    assert any(expected in problem for problem in found), found
    assert all(problem.startswith(f"config file {tmp_path / 'sync-ci.toml'}") for problem in found)


@pytest.mark.parametrize(
    ("text", "line", "where"),
    [
        ('Token = "t0ps3cret"\n', 1, "Token"),
        ('[store]\nsecret_access_key = "t0ps3cret"\n', 2, "store.secret_access_key"),
        ('[store]\nSECRET_ACCESS_KEY = "t0ps3cret"\n', 2, "store.SECRET_ACCESS_KEY"),
        ('[store]\nAccessKeyId = "t0ps3cret"\n', 2, "store.AccessKeyId"),
        ('[tenant]\n\n"api-key" = "t0ps3cret"\n', 3, "tenant.api-key"),
        (
            '[[regions]]\nname = "a"\nurl = "u"\ncolo = "A"\ntoken = "t0ps3cret"\n',
            5,
            "regions[0].token",
        ),
        ('[store.extra]\nPassword = "t0ps3cret"\n', 2, "store.extra.Password"),
        ('[a.b.c]\nprivate_key = "t0ps3cret"\n', 2, "a.b.c.private_key"),
        ('[worker]\nadmin = { bearer = "t0ps3cret" }\n', 2, "worker.admin.bearer"),
        ('[tenant]\ncredentials = ["t0ps3cret"]\n', 2, "tenant.credentials"),
    ],
)
def test_secret_looking_keys_refused_at_any_depth_and_case(
    tmp_path: Path, text: str, line: int, where: str
) -> None:
    found = problems_of(tmp_path, text)
    assert any(f"line {line}: holds a secret ({where!r})" in p for p in found), found
    assert not any("t0ps3cret" in p for p in found)


@pytest.mark.parametrize(
    "text",
    [
        '[store]\nendpoint_url = "https://AKID:pw-1@s3.example.test"\n',
        '[worker]\nurl = "https://me:pw-1@sync.example.test/"\n',
        '[[regions]]\nname = "a"\ncolo = "A"\nurl = "https://a"\nproxy = "http://u:pw-1@p:3128"\n',
        '[extra]\nlink = "https://only-user-pw-1@example.test"\n',
    ],
)
def test_urls_with_user_info_refused_and_never_shown(tmp_path: Path, text: str) -> None:
    found = problems_of(tmp_path, text)
    assert any("holds a URL with user info" in p for p in found), found
    assert not any("pw-1" in p for p in found)


def test_load_raises_the_first_problem_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "sync-ci.toml"
    path.write_text('targett = "ci"\n[store]\nbukcet = "b"\n', encoding="utf-8")
    with pytest.raises(SettingsError) as caught:
        load_settings(config=str(path), env={"HOME": str(tmp_path), "SYNC_CI_SHA": SHA})
    message = str(caught.value)
    assert message.startswith(f"config file {path} line 1: unknown key 'targett'")
    assert "(and 1 more: `sync-ci config show` lists them all)" in message


def test_a_misspelt_key_no_longer_runs_against_the_sandbox(tmp_path: Path) -> None:
    path = tmp_path / "sync-ci.toml"
    path.write_text('targett = "live"\n', encoding="utf-8")
    done = run_sync_ci(
        ["smoke", "--config", str(path)],
        {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "SYNC_CI_SHA": SHA},
        tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        f"sync-ci: error: config file {path} line 1: unknown key 'targett' at the top level; "
        "did you mean 'target'?"
    ]


def test_config_show_never_prints_user_info(tmp_path: Path) -> None:
    env = {
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "SYNC_CI_SHA": SHA,
        "SYNC_CI_WORKER_URL": "https://me:pw-show@sync.example.test",
    }
    done = run_sync_ci(["config", "show"], env, tmp_path)
    assert done.returncode == 2
    assert "pw-show" not in done.stdout + done.stderr
    assert "https://***@sync.example.test" in done.stderr


def test_key_lines_follow_tables_arrays_and_dotted_keys() -> None:
    lines = key_lines(
        'a = 1\n[t]\nb.c = 2\n"q k" = 3\n[[r]]\nn = 1\n[[r]]\nn = 2\n[r.sub]\nx = 1\n'
    )
    assert lines[("a",)] == 1 and lines[("t", "b", "c")] == 3 and lines[("t", "q k")] == 4
    assert lines[("r", 0, "n")] == 6 and lines[("r", 1, "n")] == 8
    assert lines[("r", 1, "sub", "x")] == 10


@pytest.mark.parametrize("key", ["bucket", "url", "colo", "id", "state_dir", "ci_root", "region"])
def test_ordinary_keys_do_not_look_secret(key: str) -> None:
    assert not looks_secret(key)
