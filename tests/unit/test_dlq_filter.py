"""`dlq list|export|purge` flags: filter parsing, durations, cursors, matching, output shapes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from watcher.cli import dlq, dlq_list
from watcher.cli.main import main
from watcher.core.dlq_filter import Cursor, DeadLetterFilter, parse_cursor, parse_owner
from watcher.core.model import AttemptRecord, DeadLetter, FailureClass, JobRef, OwnerRef

NOW_MS = 1_800_000_000_000


def letter(**changes: object) -> DeadLetter:
    base = DeadLetter(
        queue="batch",
        job=JobRef("etl", "nightly-29000000", "uid-1"),
        failure_class=FailureClass.OOM_KILLED,
        reason="container worker was OOM-killed",
        attempts=2,
        failed_at=1_700_000_000.0,
        cluster="prod",
        owner=OwnerRef("CronJob", "nightly", "c1"),
    )
    fields = {name: getattr(base, name) for name in base.__slots__}  # type: ignore[attr-defined]
    return DeadLetter(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, DeadLetterFilter()),
        ({"queue": "batch"}, DeadLetterFilter(queue="batch")),
        ({"failure_class": "OOM-killed"}, DeadLetterFilter(failure_class=FailureClass.OOM_KILLED)),
        ({"failure_class": "image_pull"}, DeadLetterFilter(failure_class=FailureClass.IMAGE_PULL)),
        ({"namespace": "etl"}, DeadLetterFilter(namespace="etl")),
        ({"job": "nightly"}, DeadLetterFilter(job="nightly")),
        ({"owner": "CronJob/nightly"}, DeadLetterFilter(owner=("CronJob", "nightly"))),
        ({"older_than": "2h"}, DeadLetterFilter(older_than_s=7200)),
        ({"newer_than": "3d"}, DeadLetterFilter(newer_than_s=259_200)),
        ({"newer_than": "1h30m"}, DeadLetterFilter(newer_than_s=5400)),
        ({"older_than": "90s"}, DeadLetterFilter(older_than_s=90)),
    ],
)
def test_flags_parse_to_a_filter(flags: dict[str, str], expected: DeadLetterFilter) -> None:
    assert DeadLetterFilter.parse(**flags) == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"failure_class": "oom"}, "oom"),
        ({"older_than": "2x"}, "not a duration: '2x'"),
        ({"newer_than": "-1h"}, "not a duration"),
        ({"owner": "nightly"}, "use Kind/name"),
        ({"owner": "CronJob/"}, "use Kind/name"),
        ({"owner": "a/b/c"}, "use Kind/name"),
        ({"queue": "Batch!"}, "invalid queue name"),
    ],
)
def test_bad_flags_are_one_line_errors(flags: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        DeadLetterFilter.parse(**flags)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("flt", "entry_ms", "matches"),
    [
        (DeadLetterFilter(), NOW_MS, True),
        (DeadLetterFilter(queue="etl"), NOW_MS, False),
        (DeadLetterFilter(failure_class=FailureClass.APP_ERROR), NOW_MS, False),
        (DeadLetterFilter(namespace="etl", failure_class=FailureClass.OOM_KILLED), NOW_MS, True),
        (DeadLetterFilter(namespace="other"), NOW_MS, False),
        (DeadLetterFilter(job="2900"), NOW_MS, True),
        (DeadLetterFilter(job="hourly"), NOW_MS, False),
        (DeadLetterFilter(owner=("cronjob", "nightly")), NOW_MS, True),  # kind: any case
        (DeadLetterFilter(owner=("CronJob", "Nightly")), NOW_MS, False),  # name: exact
        (DeadLetterFilter(owner=("Job", "nightly")), NOW_MS, False),
        (DeadLetterFilter(older_than_s=3600), NOW_MS - 3_600_001, True),
        (DeadLetterFilter(older_than_s=3600), NOW_MS - 3_599_000, False),
        (DeadLetterFilter(newer_than_s=3600), NOW_MS - 3_599_000, True),
        (DeadLetterFilter(newer_than_s=3600), NOW_MS - 3_600_001, False),
        (DeadLetterFilter(newer_than_s=7200, older_than_s=3600), NOW_MS - 5_000_000, True),
    ],
)
def test_filter_matches(flt: DeadLetterFilter, entry_ms: int, matches: bool) -> None:
    assert flt.matches(letter(), entry_ms, NOW_MS) is matches


def test_an_entry_without_owner_never_matches_an_owner_filter() -> None:
    assert not DeadLetterFilter(owner=("CronJob", "nightly")).matches(letter(owner=None), 0, 0)


@pytest.mark.parametrize(
    ("text", "cursor"),
    [
        ("batch/1795827114648-0", Cursor(1795827114648, 0, "batch")),
        ("etl.v2/1-12", Cursor(1, 12, "etl.v2")),
    ],
)
def test_cursors_are_entry_ids(text: str, cursor: Cursor) -> None:
    assert parse_cursor(text) == cursor
    assert str(cursor) == text


@pytest.mark.parametrize("text", ["1795827114648-0", "batch/", "batch/12", "batch/x-1", "/1-0"])
def test_a_bad_cursor_says_what_an_id_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match="<queue>/<ms>-<seq>"):
        parse_cursor(text)


def test_cursors_order_by_id_then_queue() -> None:
    assert Cursor(5, 0, "z") < Cursor(5, 1, "a") < Cursor(6, 0, "a") < Cursor(6, 0, "b")


def test_owner_parts() -> None:
    assert parse_owner("CronJob/nightly") == ("CronJob", "nightly")


def test_describe_names_the_flags() -> None:
    flt = DeadLetterFilter.parse(failure_class="oom_killed", namespace="etl", older_than="2h")
    assert flt.describe() == "--class oom_killed --namespace etl --older-than 7200s"
    assert DeadLetterFilter().describe() == "(all)"


ROWS = [dlq.summary("batch/1-0", letter()), dlq.summary("batch/2-0", letter(attempts=3))]


@pytest.mark.parametrize("output", dlq_list.OUTPUTS)
def test_every_output_holds_every_row(output: str) -> None:
    out = io.StringIO()
    dlq_list.render(ROWS, output, out)
    text = out.getvalue()
    if output == "json":
        assert json.loads(text) == ROWS
    elif output == "jsonl":
        assert [json.loads(line) for line in text.splitlines()] == ROWS
    elif output == "yaml":
        assert yaml.safe_load(text) == ROWS
    else:
        lines = text.splitlines()
        assert lines[0].split()[:3] == ["ID", "NAMESPACE", "JOB"]
        assert [line.split()[0] for line in lines[1:]] == ["batch/1-0", "batch/2-0"]


def test_the_table_keeps_one_line_per_entry_whatever_the_reason_holds() -> None:
    out = io.StringIO()
    dlq_list.table([dlq.summary("batch/1-0", letter(reason="a\nb\r\nc"))], out)
    assert len(out.getvalue().splitlines()) == 2


def test_show_summarises_for_a_person() -> None:
    history = (AttemptRecord(1, "nightly-1", "uid-0", FailureClass.OOM_KILLED, "OOM-killed", 0.0),)
    text = dlq.readable(
        "batch/1-0",
        letter(
            evidence=("pod p1: container worker OOMKilled (exit 137)", "evil\x1b[2J\nline"),
            history=history,
            manifest={
                "spec": {
                    "template": {"spec": {"containers": [{"env": [{"name": "A", "value": "s"}]}]}}
                }
            },
        ),
    )
    lines = text.splitlines()
    assert lines[0] == "batch/1-0"
    assert "  class:       oom_killed" in lines
    assert "  owner:       CronJob/nightly" in lines
    assert "    - pod p1: container worker OOMKilled (exit 137)" in lines
    assert "    1. nightly-1 oom_killed at 1970-01-01T00:00:00Z: OOM-killed" in lines
    assert "  redrive:     kube-dlq dlq redrive batch/1-0 [--dry-run]" in lines
    assert any("1 inline env value(s) hidden" in line for line in lines)
    # A stored string cannot clear the screen or start a line of its own
    assert "\x1b" not in text
    assert not any(line.startswith("line") for line in lines)
    assert "s" not in [w for line in lines for w in line.split()]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("KUBE_DLQ_REDIS_URL", "KUBE_DLQ_CONFIG", "KUBE_DLQ_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "kube-dlq.yaml"
    # Nobody answers at this address: a flag error must be reported before connecting.
    path.write_text(
        "cluster_name: r\nredis:\n  url: redis://127.0.0.1:1/0\nsecurity:\n  allow_unsigned: true\n"
    )
    return str(path)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "--class", "oom"], "kube-dlq dlq list: unknown failure class"),
        (["list", "--older-than", "2 weeks"], "kube-dlq dlq list: not a duration"),
        (["list", "--after", "12-0"], "kube-dlq dlq list: not an entry id for --after"),
        (["list", "--limit", "0"], "kube-dlq dlq list: --limit must be >= 1"),
        (["list", "--watch", "--older-than", "1h"], "kube-dlq dlq list: --watch prints new"),
        (["export", "--owner", "x"], "kube-dlq dlq export: not an owner"),
        (["purge"], "kube-dlq dlq purge: name what to purge"),
        (["purge", "batch/1-0", "--class", "oom_killed"], "kube-dlq dlq purge: give entry ids"),
        (["purge", "--all", "--queue", "batch"], "kube-dlq dlq purge: --all purges everything"),
    ],
)
def test_cli_input_errors_are_one_line_and_exit_2(
    config: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dlq", argv[0], "--config", config, *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(message)
    assert err.count("\n") == 1


@pytest.mark.parametrize("verb", ["list", "show", "stats", "export", "purge"])
def test_every_verb_has_help_with_examples(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["dlq", verb, "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "examples:" in out
    assert f"kube-dlq dlq {verb} -c config.yaml" in out
