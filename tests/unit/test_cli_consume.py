"""`kube-dlq dlq consume` refuses bad input with one line and exit 2, before touching Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.cli.main import build_parser, main


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBE_DLQ_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "kube-dlq.yaml"
    # A port nothing listens on: these must all fail before connecting.
    path.write_text(
        "cluster_name: c\nredis: {url: 'redis://127.0.0.1:1/0'}\nsecurity: {allow_unsigned: true}\n"
    )
    return str(path)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ([], "COMMAND: missing: give the handler after `--`"),
        (["--", "no-such-handler-xyz"], "'no-such-handler-xyz' is not an executable on PATH"),
        (["--consumer", "a:b", "--", "true"], "consumer name must be 1-64 letters"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    config: str, args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "consume", "--config", config, "--group", "g", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and error in err


def test_a_group_name_that_would_break_the_hash_tag_is_refused(
    config: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dlq", "consume", "--config", config, "--group", "{x}", "--", "true"]) == 2
    assert "consumer group must be" in capsys.readouterr().err


def test_the_handler_keeps_its_own_flags_after_the_separator() -> None:
    args = build_parser().parse_args(
        ["dlq", "consume", "--group", "g", "--", "sh", "-c", "exit 0", "--group", "x"]
    )
    assert args.group == "g"
    assert args.handler[-5:] == ["sh", "-c", "exit 0", "--group", "x"]
