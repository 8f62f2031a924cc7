"""The Log Miner: reading exported errors, grouping them, and filing one bug ticket per recurring problem."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import starter
from factory.config import LogMinerConfig
from factory.discovery.logs import (
    LogEvent,
    fingerprint_event,
    line_shape,
    mine_problems,
    parse_traceback,
    read_events,
)
from factory.discovery.templates import (
    TemplateMiner,
    cluster_lines,
    grouping_accuracy,
    mask_lines,
    mask_tokens,
    reset_token_cache,
)
from factory.errors import LogInputInvalid
from factory.models import READY_LABEL, DiscoveryAction, Priority, TicketType
from factory.trackers import LocalTracker
from tests.fixtures.logs.synthetic import SYSTEMS, generate

LOGS = Path(__file__).resolve().parents[1] / "fixtures" / "logs" / "events"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def trace(
    *, function: str = "mean", line: int = 12, kind: str = "ZeroDivisionError", value: str = "division by zero"
) -> str:
    return (
        "Traceback (most recent call last):\n"
        f'  File "/srv/calculator/calc/views.py", line {line + 29}, in average\n'
        "    return mean(values)\n"
        f'  File "/srv/calculator/calc/stats.py", line {line}, in {function}\n'
        "    return sum(values) / len(values)\n"
        f"{kind}: {value}"
    )


def trace_event(text: str, at: datetime = NOW) -> LogEvent:
    return LogEvent(timestamp=at, raw=text, message="request failed", **parse_traceback(text))


# ---------------------------------------------------------------------------------- template mining


@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_generated_logs_are_grouped_with_high_accuracy(system: str) -> None:
    """On labelled lines generated from each system's templates, grouping accuracy is at least 0.9."""
    data = generate(seed=11, lines=1500, systems=[system])
    ids, _ = cluster_lines([line for line, _ in data])
    assert grouping_accuracy(ids, [label for _, label in data]) >= 0.9


def test_mixed_systems_online_and_batch_both_group_well() -> None:
    """All systems' lines interleaved: the batch answer and the online one (no look-ahead) both reach 0.9."""
    data = generate(seed=5, lines=4000)
    lines, truth = [line for line, _ in data], [label for _, label in data]
    batch, _ = cluster_lines(lines)
    miner = TemplateMiner()
    online = [miner.add(line) for line in lines]
    assert grouping_accuracy(batch, truth) >= 0.9
    assert grouping_accuracy([miner.group_of(g) for g in online], truth) >= 0.9


def test_grouping_accuracy_counts_only_lines_whose_group_is_exactly_right() -> None:
    """GA: a line is right iff its predicted group holds exactly the lines of its true group."""
    truth = ["a", "a", "b", "b", "c"]
    assert grouping_accuracy([1, 1, 2, 2, 3], truth) == 1.0
    assert grouping_accuracy([1, 1, 2, 2, 2], truth) == pytest.approx(2 / 5)  # b and c merged: 3 lines wrong
    assert grouping_accuracy([1, 2, 3, 3, 4], truth) == pytest.approx(3 / 5)  # a split: 2 lines wrong


def test_token_classes_become_wildcards_and_words_stay() -> None:
    """Numbers, IPs, hex, UUIDs, paths, block ids, key=value values and timestamps are masked; words are kept."""
    masked = mask_tokens(
        "2024-05-01T10:00:00Z Received blk_-1608999687919862906 of size 67108864 from /10.250.19.102:5432 "
        "user=alice at 0xdeadbeef id 123e4567-e89b-12d3-a456-426614174000 path /var/log/app.log (took 15ms)"
    )
    assert masked == (
        "<*>", "Received", "<*>", "of", "size", "<*>", "from", "<*>", "user=<*>", "at", "<*>",
        "id", "<*>", "path", "<*>", "(took", "<*>)",
    )  # fmt: skip


def test_word_valued_variables_merge_but_different_statements_do_not() -> None:
    """User names vary across many values (a variable); 'opened'/'closed' are two statements."""
    users = ["root", "alice", "bob", "carol", "dave", "erin", "frank"]
    lines = [f"session opened for user {u}" for u in users] + [f"session closed for user {u}" for u in users]
    ids, miner = cluster_lines(lines)
    assert len(set(ids[:7])) == 1 and len(set(ids[7:])) == 1 and ids[0] != ids[7]
    assert dict(miner.templates()) == {"session opened for user <*>": 7, "session closed for user <*>": 7}


def test_a_few_recurring_words_at_one_position_are_separate_statements() -> None:
    """`boot (command N)`, `wait (command N)`, ... : six words, each recurring, are six statements."""
    words = (
        ["boot"] * 40
        + ["wait"] * 30
        + ["halt"] * 5
        + ["risBoot"] * 2
        + ["bootGenvmunix"] * 3
        + ["clusterAddMember"] * 2
    )
    lines = [f"{word}  (command {2900 + i})" for i, word in enumerate(words)]
    ids, miner = cluster_lines(lines)
    assert grouping_accuracy(ids, words) == 1.0
    assert dict(miner.templates())["boot (command <*>)"] == 40


def test_names_that_vary_per_line_are_wildcards() -> None:
    """User and host names mostly seen once, or printed by several statements, are variables."""
    users = [f"{name}{suffix}" for name in ("admin", "guest", "oracle", "test", "user") for suffix in ("", "x", "01")]
    hosts = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]
    lines = [f"Invalid user {u} from 10.0.0.{i}" for i, u in enumerate(users)]
    lines += [f"Heartbeat from {hosts[i % 11]}.local received" for i in range(44)]
    lines += [f"Node {hosts[i % 11]}.local is unhealthy" for i in range(22)]
    truth = ["invalid"] * len(users) + ["heartbeat"] * 44 + ["node"] * 22
    ids, miner = cluster_lines(lines)
    assert grouping_accuracy(ids, truth) == 1.0
    assert set(dict(miner.templates())) == {
        "Invalid user <*> from <*>",
        "Heartbeat from <*> received",
        "Node <*> is unhealthy",
    }


def test_units_and_host_names_are_part_of_the_value() -> None:
    """'5.2 KB', '30 ms' and host names (with or without a port) are one value each; other words stay."""
    assert mask_tokens("Stored 5.2 KB on db1.prod.example.com:5432 in 30 ms, then 7 B") == (
        "Stored", "<*>", "on", "<*>", "in", "<*>,", "then", "<*>",
    )  # fmt: skip
    assert mask_tokens("Read 5 b-tree pages; slept 2 seconds.") == ("Read", "<*>", "b-tree", "pages;", "slept", "<*>.")
    assert mask_tokens("Lost executor on worker.cluster.local: gone") == ("Lost", "executor", "on", "<*>", "gone")
    # Sizes in different units are one statement, as are two different hosts.
    lines = [f"Block {i} stored (size {size}, free {free})" for i, (size, free) in enumerate(
        [("93.0 B", "317.1 KB"), ("5.2 KB", "5.2 KB"), ("8.8 KB", "14.0 MB"), ("384.0 B", "317.5 KB")]
    )]  # fmt: skip
    ids, _ = cluster_lines(lines)
    assert len(set(ids)) == 1


def test_a_value_may_span_tokens() -> None:
    """'1190 bytes (1.16 KB)' and '0 bytes', '<1 sec' and '00:02' are one value each: one statement."""
    values = [("0 bytes", "00:01"), ("1190 bytes (1.16 KB)", "<1 sec"), ("451 bytes", "00:02"), ("7 bytes", "<1 sec")]
    lines = [f"proxy:5070 close, {sent} sent, lifetime {life}" for sent, life in values]
    lines += [f"proxy:5070 open through proxy {i}" for i in range(4)]
    ids, _ = cluster_lines(lines)
    assert grouping_accuracy(ids, ["close"] * 4 + ["open"] * 4) == 1.0


def test_day_and_month_names_next_to_numbers_are_part_of_the_timestamp() -> None:
    """'at Fri Jun 17 07:07:00 2005' is one value; a day or month name without a number is a word."""
    assert mask_tokens("connection at Fri Jun 17 07:07:00 2005 from 10.0.0.1") == (
        "connection", "at", "<*>", "<*>", "<*>", "from", "<*>",
    )  # fmt: skip
    assert mask_tokens("backup 17 Jun 2005 done") == ("backup", "<*>", "<*>", "done")
    assert mask_tokens("Report for May is ready") == ("Report", "for", "May", "is", "ready")
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    lines = [f"connection from 10.0.0.{i} (h{i}.example.net) at {days[i % 7]} Jul {i} 10:00:00 2005" for i in range(20)]
    lines += [f"connection from 10.0.1.{i} () at {days[i % 3]} Jun {i + 1} 11:00:00 2005" for i in range(10)]
    lines += [f"session closed for user {u}" for u in ("alice", "bob", "carol", "dave", "erin", "frank")]
    ids, miner = cluster_lines(lines)
    assert grouping_accuracy(ids, ["connection"] * 30 + ["closed"] * 6) == 1.0
    assert "connection from <*> at <*>" in dict(miner.templates())


def test_a_host_and_port_is_one_value_but_a_source_line_keeps_its_file() -> None:
    assert mask_tokens("trello.com:443 close") == ("<*>", "close")
    assert mask_tokens("csdnimg.cn:80 error") == ("<*>", "error")
    assert mask_tokens("at Client.java:42 in main.py:7") == ("at", "Client.java:<*>", "in", "main.py:<*>")


def test_a_word_where_most_lines_print_a_value_is_a_value() -> None:
    """'awqiizxequsixgr:80' once among twenty IP:port values is a host the masking did not recognise."""
    lines = [f"10.0.{i}.1:80 error : Could not connect to proxy" for i in range(19)]
    lines.append("awqiizxequsixgr:80 error : Could not connect to proxy")
    lines += [f"10.0.{i}.2:443 open through proxy HTTPS" for i in range(10)]
    ids, _ = cluster_lines(lines)
    assert grouping_accuracy(ids, ["error"] * 20 + ["open"] * 10) == 1.0


def test_values_in_a_row_line_up_with_a_single_value() -> None:
    """A value spanning two tokens, first in some lines and second in others of the same length,
    keeps the statement's words in line: 'sent,' stays a word of the one statement."""
    tail = [f"received, lifetime 00:0{i % 10}" for i in range(20)]
    lines = [f"h{i}.example.net:443 close, {i} bytes ({i}.5 KB) sent, {i} bytes {tail[i]}" for i in range(20)]
    lines += [f"h{i}.example.net:443 close, {i} bytes sent, {i} bytes ({i}.5 KB) {tail[i]}" for i in range(10)]
    lines += [f"h{i}.example.net:443 close, {i} bytes sent, {i} bytes {tail[i]}" for i in range(20)]
    lines += [f"h{i}.example.net:443 open through proxy {i}" for i in range(5)]
    ids, miner = cluster_lines(lines)
    assert grouping_accuracy(ids, ["close"] * 50 + ["open"] * 5) == 1.0
    assert dict(miner.templates())["<*> close, <*> sent, <*> received, lifetime <*>"] == 50


def test_a_value_spelled_like_another_statements_word_stays_in_its_group() -> None:
    """A user named 'user', where another statement of the same length prints the word 'user':
    its lines join the statement's group instead of making one of their own."""
    names = [f"{first}{last}" for first in ("ann", "bob", "cy", "dee", "eve") for last in ("", "x", "99", "adm")]
    names += ["user"] * 4
    lines = [f"Invalid user {name} from 10.0.0.{i}" for i, name in enumerate(names)]
    lines += [f"input_userauth_request: invalid user {name} [preauth]" for name in names]
    ids, miner = cluster_lines(lines)
    assert grouping_accuracy(ids, ["invalid"] * len(names) + ["request"] * len(names)) == 1.0
    assert set(dict(miner.templates())) == {
        "Invalid user <*> from <*>",
        "input_userauth_request: invalid user <*> [preauth]",
    }


def test_masking_many_lines_at_once_is_masking_each() -> None:
    """``mask_lines`` (batch) gives what ``mask_tokens`` gives line by line, cache or no cache."""
    lines = [line for line, _ in generate(seed=5, lines=600)]
    lines += ["Stored 5.2 KB on db1.prod.example.com:5432 in 30 ms", "user=root uid=0 (took 15ms) at 0xdeadbeef"]
    reset_token_cache()
    one_by_one = [mask_tokens(line) for line in lines]
    reset_token_cache()
    assert mask_lines(lines) == one_by_one
    assert mask_lines(lines) == one_by_one  # with every token cached


def test_a_line_added_after_priming_treats_unseen_words_as_values() -> None:
    """Primed on a batch, a later line's words the batch never had are not taken for the statement's."""
    hosts = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo"]
    lines = [f"worker started on {host}" for host in hosts]
    miner = TemplateMiner()
    miner.prime(lines)
    group = {miner.add(line) for line in lines}.pop()
    assert miner.add("worker started on zulu") == group
    assert miner.template_of(group) == "worker started on <*>"


def test_upper_case_states_are_the_words_of_separate_statements() -> None:
    """'Transitioned from NEW to INITED': an enumeration's values, even each seen once, are constants."""
    steps = [("NEW", "INITED"), ("INITED", "SETUP"), ("SETUP", "RUNNING"), ("RUNNING", "SUCCEEDED")]
    lines = [f"job_{i} Transitioned from {a} to {b}" for i, (a, b) in enumerate(steps)]
    ids, miner = cluster_lines([*lines, "job_9 Transitioned from NEW to INITED"])
    assert ids == [1, 2, 3, 4, 1]
    assert "<*> Transitioned from NEW to INITED" in dict(miner.templates())


def test_a_few_names_printed_by_two_statements_are_variables() -> None:
    """Three user names, each opening and closing a session: two statements, not six."""
    users = ["cyrus", "news", "cyrus", "news", "test", "news"]
    lines = [f"session opened for user {u} by (uid=0)" for u in users] + [f"session closed for user {u}" for u in users]
    ids, miner = cluster_lines(lines)
    assert grouping_accuracy(ids, ["opened"] * 6 + ["closed"] * 6) == 1.0
    assert set(dict(miner.templates())) == {"session opened for user <*> by (uid=<*>)", "session closed for user <*>"}


def test_batch_templates_do_not_depend_on_line_order() -> None:
    """The batch answer judges positions on all lines: shuffling the input keeps every template."""
    data = generate(seed=3, lines=1200)
    lines = [line for line, _ in data]
    _, miner = cluster_lines(lines)
    _, shuffled = cluster_lines(list(reversed(lines)))
    assert dict(miner.templates()) == dict(shuffled.templates())


# ---------------------------------------------------------------------------------- fingerprints


def test_trace_fingerprint_ignores_line_numbers_addresses_and_ids() -> None:
    """The same bug at other line numbers, with other ids in its message, keeps its fingerprint."""
    config = LogMinerConfig()
    first = trace_event(trace(line=12, value="division by zero in request 7f3a at 0x7f00aa"))
    later = trace_event(trace(line=57, value="division by zero in request 9c01 at 0x7f11bb"))
    assert fingerprint_event(first, config) == fingerprint_event(later, config)


def test_trace_fingerprint_separates_exception_types_and_call_paths() -> None:
    """Another exception type, or another in-app function on the path, is another problem."""
    config = LogMinerConfig()
    base = fingerprint_event(trace_event(trace()), config)
    assert fingerprint_event(trace_event(trace(kind="ValueError")), config) != base
    assert fingerprint_event(trace_event(trace(function="median")), config) != base


def test_library_frames_do_not_change_the_fingerprint() -> None:
    """Frames from site-packages are not the repo's code: a library upgrade keeps the fingerprint."""
    config = LogMinerConfig()
    ours = trace()
    with_library = ours.replace(
        "Traceback (most recent call last):\n",
        'Traceback (most recent call last):\n  File "/usr/lib/python3.11/site-packages/flask/app.py", '
        "line 1799, in dispatch_request\n    return view()\n",
    )
    assert fingerprint_event(trace_event(ours), config) == fingerprint_event(trace_event(with_library), config)


# ---------------------------------------------------------------------------------- ingestion


def test_sentry_export_is_read_with_frames_and_timestamps() -> None:
    """A Sentry export ('events'): type, value, frames innermost last, ISO and epoch timestamps."""
    events = read_events(LOGS / "sentry_export.json")
    assert [e.exception_type for e in events] == ["ZeroDivisionError", "ZeroDivisionError", "KeyError"]
    assert [f.function for f in events[0].frames] == ["dispatch_request", "average", "mean"]
    assert events[0].frames[0].in_app is False and events[0].frames[2].in_app is True
    assert events[0].timestamp == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert events[2].timestamp == datetime(2024, 5, 1, 11, 0, 0, 500000, tzinfo=UTC)
    assert "calc/stats.py" in events[0].raw


def test_single_sentry_event_and_list_of_events(tmp_path: Path) -> None:
    """One event object, or a JSON list of them, is read the same way."""
    export = json.loads((LOGS / "sentry_export.json").read_text())
    (tmp_path / "one.json").write_text(json.dumps(export["events"][0]))
    (tmp_path / "list.json").write_text(json.dumps(export["events"]))
    assert [e.exception_type for e in read_events(tmp_path / "one.json")] == ["ZeroDivisionError"]
    assert len(read_events(tmp_path / "list.json")) == 3


def test_plain_log_keeps_a_multi_line_traceback_with_its_log_line() -> None:
    """A logged exception is one event: its log line, timestamp and level, and the traceback under it."""
    events = read_events(LOGS / "app" / "service.log")
    assert len(events) == 7
    crash = events[1]
    assert crash.level == "error" and crash.timestamp == datetime(2024, 5, 1, 10, 0, 1, 120000, tzinfo=UTC)
    assert crash.exception_type == "ZeroDivisionError"
    assert [f.function for f in crash.frames] == ["average", "mean"]
    assert crash.raw.startswith("2024-05-01 10:00:01,120 ERROR") and crash.raw.endswith("division by zero")
    assert events[2].exception_type is None and "connection to" in events[2].message


def test_json_lines_structured_logs() -> None:
    """JSON lines: level/levelname/severity, message/msg/event, a traceback in 'exception'."""
    events = read_events(LOGS / "app" / "worker.jsonl")
    assert [e.level for e in events] == ["error", "info", "error"]
    assert events[0].exception_type == "json.decoder.JSONDecodeError"
    assert events[2].message == "disk /var/lib/calc is 97% full" and events[2].exception_type is None


def test_directory_is_read_recursively_and_stdin_like_streams_too(tmp_path: Path) -> None:
    """A directory yields every file's events; an open text stream is read like a file."""
    events = read_events(LOGS)
    assert len(events) == 3 + 7 + 3
    streamed = read_events(io.StringIO((LOGS / "app" / "service.log").read_text()))
    assert [e.message for e in streamed] == [e.message for e in read_events(LOGS / "app" / "service.log")]


def test_bad_input_is_refused_with_one_line(tmp_path: Path) -> None:
    """A missing source or unreadable JSON raises LogInputInvalid naming the file, in one line."""
    with pytest.raises(LogInputInvalid, match="does not exist"):
        read_events(tmp_path / "missing.log")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"level": "error", "message": "ok"}\n{"level": "error", "message": \n')
    with pytest.raises(LogInputInvalid) as caught:
        read_events(broken)
    assert "broken.jsonl:2" in str(caught.value) and "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------- problems and tickets


def _repeated(count: int, *, start: datetime, step: timedelta = timedelta(minutes=5)) -> list[LogEvent]:
    return [
        trace_event(trace(line=12 + i % 3, value=f"division by zero (request {i})"), start + i * step)
        for i in range(count)
    ]


def test_only_groups_above_the_threshold_within_the_window_become_problems() -> None:
    """min_occurrences counts errors in the window; older errors and info lines do not count."""
    config = LogMinerConfig(min_occurrences=3, window_hours=24)
    two = _repeated(2, start=NOW - timedelta(hours=1))
    assert mine_problems(two, repo="calculator", config=config, now=NOW) == []
    old = _repeated(5, start=NOW - timedelta(days=3))
    assert mine_problems(two + old, repo="calculator", config=config, now=NOW) == []
    info = [LogEvent(timestamp=NOW, level="info", message="job 1 done") for _ in range(9)]
    assert mine_problems(info, repo="calculator", config=config, now=NOW) == []
    assert (
        len(mine_problems(_repeated(3, start=NOW - timedelta(hours=1)), repo="calculator", config=config, now=NOW)) == 1
    )


def test_trace_group_becomes_a_ready_bug_ticket() -> None:
    """The ticket: LOG-<fingerprint>, bug, ready-for-robot, log-miner, repo paths of in-app frames, the trace."""
    events = read_events(LOGS)
    problems = mine_problems(events, repo="calculator", config=LogMinerConfig(min_occurrences=2), now=NOW)
    crash = next(p for p in problems if "ZeroDivisionError" in (p.ticket.title or ""))
    ticket = crash.ticket
    assert ticket.id == f"LOG-{ticket.fingerprint[:10]}" and len(ticket.fingerprint or "") == 64
    assert ticket.type == TicketType.BUG and ticket.labels == [READY_LABEL] and ticket.source == "log-miner"
    assert ticket.title == "ZeroDivisionError: division by zero in calc.stats.mean"
    assert ticket.context.repo == "calculator"
    assert ticket.context.filepaths == ["calc/stats.py", "calc/views.py"]
    assert "Traceback (most recent call last)" in ticket.context.error_logs
    assert any("no longer occurs" in c for c in ticket.acceptance_criteria)
    assert any("regression test" in c for c in ticket.acceptance_criteria)
    assert crash.occurrences == 4  # two Sentry events and two logged tracebacks
    assert crash.first_seen == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def test_error_lines_without_trace_are_grouped_by_template() -> None:
    """Error lines differing in IPs and durations are one problem titled by their template."""
    events = read_events(LOGS / "app" / "service.log")
    problems = mine_problems(events, repo="calculator", config=LogMinerConfig(min_occurrences=3), now=NOW)
    titles = [p.ticket.title for p in problems]
    # "30 ms": a unit printed after a number is part of the value.
    assert titles == ["Recurring error: ERROR calc.db: connection to <*> lost after <*>"]
    assert problems[0].occurrences == 3 and problems[0].ticket.context.filepaths == []


def test_priority_follows_frequency_and_recency() -> None:
    """Frequent and recent: high; a few, recent: medium; nothing for three days: low."""
    config = LogMinerConfig(min_occurrences=3, high_occurrences=20, window_hours=24 * 30)
    start = NOW - timedelta(hours=2)

    def priority(events: list[LogEvent]) -> Priority:
        return mine_problems(events, repo="calculator", config=config, now=NOW)[0].ticket.priority

    assert priority(_repeated(25, start=start, step=timedelta(minutes=4))) == Priority.HIGH
    assert priority(_repeated(4, start=start)) == Priority.MEDIUM
    assert priority(_repeated(25, start=NOW - timedelta(days=10))) == Priority.LOW


def test_max_tickets_per_run_keeps_the_most_urgent() -> None:
    """At most max_tickets_per_run problems, the highest priority first."""
    events = [
        LogEvent(timestamp=NOW, level="error", message=f"ERROR worker {kind} crashed with code {i}")
        for kind, n in (("alpha", 30), ("beta", 5), ("gamma", 4))
        for i in range(n)
    ]
    config = LogMinerConfig(max_tickets_per_run=1, high_occurrences=20)
    problems = mine_problems(events, repo="calculator", config=config, now=NOW)
    assert [p.occurrences for p in problems] == [30]


def test_a_problem_whose_template_shifts_keeps_its_ticket(tmp_path: Path) -> None:
    """Three 'refused: declined' lines one day; the next, the same lines among others with other
    reasons make the reason a variable: a new template, the same problem, the same ticket."""
    config = LogMinerConfig(min_occurrences=3)

    def refused(reasons: list[str]) -> list[LogEvent]:
        return [
            LogEvent(timestamp=NOW, level="error", message=f"ERROR payments: order {100 + i} refused: {reason}")
            for i, reason in enumerate(reasons)
        ]

    first = mine_problems(refused(["declined"] * 3), repo="shop", config=config, now=NOW)
    others = ["expired", "stolen", "blocked", "lost", "closed", "frozen", "limited"]
    second = mine_problems(refused(["declined"] * 3 + others), repo="shop", config=config, now=NOW)
    assert first[0].ticket.title == "Recurring error: ERROR payments: order <*> refused: declined"
    assert second[0].ticket.title == "Recurring error: ERROR payments: order <*> refused: <*>"
    assert first[0].ticket.fingerprint != second[0].ticket.fingerprint
    tracker = LocalTracker(tmp_path / "tickets")
    assert tracker.record(first[0], "run-1").action == DiscoveryAction.CREATED
    again = tracker.record(second[0], "run-2")
    assert again.action == DiscoveryAction.UPDATED and again.ticket_id == first[0].ticket.id
    (only,) = tracker.list()
    assert only.occurrences == 10 and only.ticket.title == second[0].ticket.title
    # The same statement in another repo is another problem: aliases carry the repo.
    elsewhere = mine_problems(refused(["declined"] * 3), repo="billing", config=config, now=NOW)
    assert tracker.record(elsewhere[0], "run-3").action == DiscoveryAction.CREATED


def test_line_shape_spells_every_token_with_a_digit_as_zero() -> None:
    assert line_shape("ERROR  order 42 (id=a1b2) refused:  declined") == "ERROR order 0 0 refused: declined"


def test_same_problem_found_again_updates_its_ticket(tmp_path: Path) -> None:
    """Two runs over different occurrences (other lines, ids, times) give one ticket, updated."""
    config = LogMinerConfig()
    first = mine_problems(_repeated(3, start=NOW - timedelta(hours=5)), repo="calculator", config=config, now=NOW)
    later_events = [trace_event(trace(line=80, value="division by zero (job 77)"), NOW) for _ in range(4)]
    second = mine_problems(later_events, repo="calculator", config=config, now=NOW + timedelta(hours=1))
    assert first[0].ticket.fingerprint == second[0].ticket.fingerprint
    tracker = LocalTracker(tmp_path / "tickets")
    assert tracker.record(first[0], "run-1").action == DiscoveryAction.CREATED
    assert tracker.record(second[0], "run-2").action == DiscoveryAction.UPDATED
    [tracked] = tracker.list()
    assert (tracked.occurrences, tracked.sightings) == (4, 2)  # the newest window's count; two sightings


# ---------------------------------------------------------------------------------- the command line


def test_cluster_command_prints_one_group_id_per_line_in_order() -> None:
    """`factory logs cluster` on stdin: one id per input line, equal ids for one template."""
    text = "conn from 10.0.0.1 closed\nuser root logged in\nconn from 10.0.0.2 closed\n"
    result = CliRunner().invoke(starter.app, ["logs", "cluster"], input=text)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["1", "2", "1"]


def test_cluster_command_templates_option(tmp_path: Path) -> None:
    """`--templates` prints each template with its count, the most frequent first; a FILE works like stdin."""
    path = tmp_path / "lines.log"
    path.write_text(
        "".join(f"Deleting block blk_{i} file /data/{i}\n" for i in range(5)) + "link down on the primary interface\n"
    )
    result = CliRunner().invoke(starter.app, ["logs", "cluster", str(path), "--templates"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["5\tDeleting block <*> file <*>", "1\tlink down on the primary interface"]


def test_cluster_command_missing_file_is_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A missing FILE: one line on stderr, no traceback, exit code 2."""
    monkeypatch.setattr(sys, "argv", ["factory", "logs", "cluster", str(tmp_path / "nope.log")])
    code = starter._run_cli()
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: cannot read") and len(err.strip().splitlines()) == 1
