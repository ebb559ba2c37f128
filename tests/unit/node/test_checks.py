"""checks: the inventory's `checks` parsed into typed HealthChecks (inventory/parse_entries.py), and
running http/tcp probes against real servers (node/checks.py)."""

from __future__ import annotations

import http.server
import math
import shlex
import socket
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nixherd.errors import CommandError
from nixherd.events import Event, LogLine, Stage, StageFinished, StageStarted
from nixherd.inventory.entries import CheckKind, HealthCheck, fill
from nixherd.inventory.parse_entries import check_issues, parse_check
from nixherd.node.checks import run_check, run_checks, summary
from nixherd.run import process
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target


def no_sleep(_seconds: float) -> None:
    pass


def conn(host: str = "127.0.0.1") -> Connection:
    return Connection(Target(node="web-1", host=host), control_dir="/tmp/nh-x")


# --- parsing ----------------------------------------------------------------------------------


def test_parse_http_with_defaults() -> None:
    check, problems = parse_check("site", {"http": "http://{host}:8080/health"})
    assert problems == []
    assert check == HealthCheck("site", CheckKind.HTTP, url="http://{host}:8080/health")
    assert check.timeout == 5.0 and check.retries == 2 and check.interval == 1.0
    assert check.status == 200 and check.body is None


def test_parse_every_option() -> None:
    table = {
        "http": "https://x/",
        "status": 204,
        "body": "^ok$",
        "timeout": 2,
        "retries": 0,
        "interval": 0.5,
    }
    check, problems = parse_check("s", table)
    assert problems == []
    assert check is not None
    assert (check.status, check.body, check.timeout, check.retries, check.interval) == (
        204,
        "^ok$",
        2.0,
        0,
        0.5,
    )


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({}, "exactly one of command, http, tcp, unit is required"),
        (
            {"http": "http://a/", "tcp": "a:1"},
            "exactly one of command, http, tcp, unit is required",
        ),
        ({"http": "ftp://a/"}, "http: must be an http:// or https:// URL"),
        ({"tcp": "nohostport"}, "tcp: must be host:port"),
        ({"command": "systemctl is-active x"}, "command: must be a non-empty list"),
        ({"command": []}, "command: must be a non-empty list"),
        ({"command": ["ok", ""]}, "command: must be a non-empty list"),
        ({"tcp": "a:1", "status": 200}, "status/body: only for http checks"),
        ({"http": "http://a/", "status": 42}, "status: must be 100..599, got 42"),
        ({"http": "http://a/", "timeout": 0}, "timeout: must be 0.01..3600 seconds, got 0"),
        # Numbers that overflowed a sleep or a deadline once the node had switched.
        (
            {"http": "http://a/", "timeout": 1e308},
            "timeout: must be 0.01..3600 seconds, got 1e+308",
        ),
        (
            {"http": "http://a/", "timeout": math.inf},
            "timeout: must be 0.01..3600 seconds, got inf",
        ),
        (
            {"http": "http://a/", "timeout": math.nan},
            "timeout: must be 0.01..3600 seconds, got nan",
        ),
        (
            {"http": "http://a/", "interval": 1e10},
            "interval: must be 0..3600 seconds, got 10000000000.0",
        ),
        ({"http": "http://a/", "interval": math.nan}, "interval: must be 0..3600 seconds, got nan"),
        ({"http": "http://a/", "interval": -0.5}, "interval: must be 0..3600 seconds, got -0.5"),
        ({"http": "http://a/", "retries": 1001}, "retries: must be 0..1000, got 1001"),
        # Addresses that failed (or raised) only when the check ran.
        ({"http": "http://[zz/"}, "http: not a valid URL: Invalid IPv6 URL"),
        ({"http": "http:///path"}, "http: not a valid URL: no host"),
        ({"http": "http://{host}:99999/"}, "http: port must be 1..65535, got 99999"),
        ({"http": "http://{host}:8o/"}, 'http: port must be 1..65535, got "8o"'),
        ({"http": "http://-x/"}, 'http: not a valid host: "-x"'),
        ({"tcp": "{host}:99999"}, "tcp: port must be 1..65535, got 99999"),
        ({"tcp": "{host}:0"}, "tcp: port must be 1..65535, got 0"),
        ({"tcp": "{host}:"}, 'tcp: port must be 1..65535, got ""'),
        ({"tcp": ":22"}, "tcp: must be host:port"),
        ({"tcp": "[::g]:22"}, 'tcp: not a valid host: "::g"'),
        # Placeholders other than {host} and {node} would reach the network as typed.
        ({"http": "http://{host}:{port}/"}, "http: unknown placeholder {port} (only {host} and"),
        ({"tcp": "{host.__class__}:1"}, "tcp: unknown placeholder {host.__class__} (only"),
        ({"http": "http://{host/"}, "http: a { or } that is no placeholder"),
        ({"http": "http://a/", "retries": True}, "retries: must be an integer"),
        ({"http": "http://a/", "retries": 1.5}, "retries: must be an integer"),
        ({"http": "http://a/", "body": "("}, "body: not a valid regex"),
        ({"http": "http://a/", "expect": 200}, "expect: unknown field"),
    ],
)
def test_parse_refuses(table: Mapping[str, Any], problem: str) -> None:
    check, problems = parse_check("c", table)
    assert check is None
    assert any(p.startswith(problem) for p in problems), problems


@pytest.mark.parametrize(
    "table",
    [
        {"http": "http://{host}:8080/health?x=1#top"},
        {"http": "https://{node}.internal/"},
        {"http": "http://user@{host}:1/"},
        {"http": "https://[::1]:8443/"},
        {"http": "http://10.0.0.1:65535/"},
        {"tcp": "{host}:22"},
        {"tcp": "[::1]:22"},
        {"tcp": "db-{node}.example.com:5432"},
        {"command": ["echo", "{port}"], "timeout": 3600, "interval": 0, "retries": 1000},
        {"http": "http://a/", "timeout": 0.01, "interval": 3600.0},
    ],
)
def test_parse_accepts(table: Mapping[str, Any]) -> None:
    check, problems = parse_check("c", table)
    assert problems == [] and check is not None


def check_tables() -> st.SearchStrategy[dict[str, Any]]:
    number = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.floats(min_value=-1, max_value=4000),
        st.booleans(),
    )
    kind = st.sampled_from([{"command": ["true"]}, {"http": "http://{host}/"}, {"tcp": "{host}:1"}])
    return st.builds(
        lambda base, extra: {**base, **extra},
        kind,
        st.dictionaries(st.sampled_from(["timeout", "retries", "interval"]), number),
    )


@settings(max_examples=400, deadline=None)
@given(table=check_tables())
def test_a_valid_check_fits_the_run_time_arithmetic(table: dict[str, Any]) -> None:
    """Whatever numbers a check table holds, either it is refused naming the key, or every
    duration it implies is one `time.sleep`, socket timeouts and the watchdog's whole-second
    window take (these overflowed mid-apply, after the switch)."""
    check, problems = parse_check("c", table)
    if check is None:
        assert problems and all(p.split(":")[0] in table for p in problems), problems
        return
    for seconds in (check.timeout, check.interval, check.budget):
        assert math.isfinite(seconds) and 0 <= seconds < threading.TIMEOUT_MAX
    assert math.ceil(30.0 + check.budget) < 2**31  # the watchdog's shell arithmetic
    with socket.socket() as probe:
        probe.settimeout(check.timeout)  # raises OverflowError when too large


def test_validate_gives_key_paths_for_the_inventory() -> None:
    assert check_issues({"tcp": "a:1"}) is None
    assert check_issues("x") == [
        ("", "must be a table (command, http, tcp or unit, with timeout, retries, interval)")
    ]
    assert check_issues({"http": "http://a/", "retries": -1, "foo": 1}) == [
        (".foo", "unknown field"),
        (".retries", "must be 0..1000, got -1"),
    ]
    assert check_issues({"interval": 1}) == [
        ("", "exactly one of command, http, tcp, unit is required")
    ]


def test_the_resolver_keeps_the_declaration_order_of_checks() -> None:
    from nixherd.inventory import loads

    node = loads('[nodes.n.checks.b]\ntcp = "{host}:1"\n[nodes.n.checks.a]\ncommand = ["true"]\n')
    found = node.nodes["n"].checks
    assert [c.name for c in found.values()] == ["b", "a"]
    assert found["a"] == HealthCheck("a", CheckKind.COMMAND, command=("true",))


def test_fill_placeholders_literally() -> None:
    assert fill("http://{host}:80/{node}", host="10.0.0.1", node="web-1") == (
        "http://10.0.0.1:80/web-1"
    )
    assert fill("{host}:22", host="fe80::1", node="n") == "[fe80::1]:22"
    # No format-string semantics: attribute access stays text.
    assert fill("{host.__class__}", host="h", node="n") == "{host.__class__}"


def test_budget_is_the_longest_a_check_can_take() -> None:
    check = HealthCheck("c", CheckKind.TCP, address="a:1", timeout=2, retries=3, interval=0.5)
    assert check.budget == 4 * 2 + 3 * 0.5


# --- running against real servers ---------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/ok" else 503
        body = b"ready\n" if status == 200 else b"starting\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_http_ok_and_body(web: int) -> None:
    check = HealthCheck(
        "s", CheckKind.HTTP, url=f"http://{{host}}:{web}/ok", body="^ready", retries=0
    )
    result = run_check(conn(), check, sleep=no_sleep)
    assert result.ok
    assert result.attempts == 1
    assert result.message == f"http://127.0.0.1:{web}/ok: status 200"


def test_http_wrong_status_retries_then_fails(web: int) -> None:
    check = HealthCheck("s", CheckKind.HTTP, url=f"http://{{host}}:{web}/", retries=2)
    slept: list[float] = []
    result = run_check(conn(), check, sleep=slept.append)
    assert not result.ok
    assert result.attempts == 3
    assert slept == [1.0, 1.0]
    assert result.message.endswith("status 503, expected 200")


def test_http_expected_error_status_passes(web: int) -> None:
    check = HealthCheck("s", CheckKind.HTTP, url=f"http://{{host}}:{web}/", status=503, retries=0)
    assert run_check(conn(), check, sleep=no_sleep).ok


def test_http_body_mismatch(web: int) -> None:
    check = HealthCheck(
        "s", CheckKind.HTTP, url=f"http://{{host}}:{web}/ok", body="^nope", retries=0
    )
    result = run_check(conn(), check, sleep=no_sleep)
    assert not result.ok
    assert "body does not match" in result.message


def test_http_nothing_listening() -> None:
    url = f"http://{{host}}:{closed_port()}/"
    result = run_check(conn(), HealthCheck("s", CheckKind.HTTP, url=url, retries=0), sleep=no_sleep)
    assert not result.ok
    assert "refused" in result.message.lower()


def test_tcp_open_and_closed(web: int) -> None:
    ok = HealthCheck("t", CheckKind.TCP, address=f"{{host}}:{web}", retries=0)
    assert run_check(conn(), ok, sleep=no_sleep).ok
    shut = HealthCheck("t", CheckKind.TCP, address=f"{{host}}:{closed_port()}", retries=0)
    result = run_check(conn(), shut, sleep=no_sleep)
    assert not result.ok
    assert "refused" in result.message.lower()


# --- command checks run on the target (argv checked) ---------------------------------------------


def test_command_check_runs_argv_on_the_node(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Sequence[str]] = []
    codes = [3, 0]

    def fake_run(argv: Sequence[str], **kwargs: Any) -> Result:
        seen.append(argv)
        assert kwargs["timeout"] == 5.0
        code = codes.pop(0)
        return Result(tuple(argv), code, "", "unit app.service is failed\n" if code else "")

    monkeypatch.setattr(process, "run", fake_run)
    check = HealthCheck("units", CheckKind.COMMAND, command=("systemctl", "is-active", "a b"))
    events: list[Event] = []
    result = run_check(conn(), check, emit=events.append, sleep=no_sleep)
    assert result.ok and result.attempts == 2
    assert seen[0][0] == "ssh"
    assert shlex.split(seen[0][-1]) == ["systemctl", "is-active", "a b"]
    assert events == [
        LogLine("web-1", "check units: attempt 1 failed: exit 3: unit app.service is failed")
    ]


def test_command_check_timeout_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_run(argv: Sequence[str], **_kwargs: Any) -> Result:
        raise CommandError(argv, None, "")

    monkeypatch.setattr(process, "run", fake_run)
    check = HealthCheck("slow", CheckKind.COMMAND, command=("sleep", "9"), timeout=1, retries=0)
    result = run_check(conn(), check, sleep=no_sleep)
    assert not result.ok
    assert result.message == "timed out after 1s"


def test_run_checks_runs_all_and_reports(web: int) -> None:
    good = HealthCheck("good", CheckKind.TCP, address=f"{{host}}:{web}", retries=0)
    bad = HealthCheck("bad", CheckKind.HTTP, url=f"http://{{host}}:{web}/", retries=0)
    events: list[Event] = []
    results = run_checks(conn(), [bad, good], emit=events.append, sleep=no_sleep)
    assert [(r.name, r.ok) for r in results] == [("bad", False), ("good", True)]
    assert summary(results) == f"bad: http://127.0.0.1:{web}/: status 503, expected 200"
    assert isinstance(events[0], StageStarted) and events[0].stage is Stage.CHECK
    assert isinstance(events[-1], StageFinished) and events[-1].stage is Stage.CHECK
    assert run_checks(conn(), [], emit=events.append) == ()


# --- the inventory field ----------------------------------------------------------------------


def test_inventory_checks_merge_by_name(tmp_path: Path) -> None:
    from nixherd.inventory import load

    path = tmp_path / "inventory.toml"
    path.write_text(
        """
[defaults.checks.ssh]
tcp = "{host}:22"
[defaults.checks.site]
http = "http://{host}/"

[roles.web.checks.site]
http = "http://{host}:8080/health"
retries = 5

[[roles.web.targets]]
host = "10.0.0.1"

[nodes.db]
role = "web"
[nodes.db.checks.ssh]
command = ["true"]
"""
    )
    inventory = load(str(path))
    web = list(inventory.nodes["web-10-0-0-1"].checks.values())
    assert [(c.name, c.kind, c.url or c.address) for c in web] == [
        ("ssh", CheckKind.TCP, "{host}:22"),
        ("site", CheckKind.HTTP, "http://{host}:8080/health"),
    ]
    assert web[1].retries == 5
    db = inventory.nodes["db"].checks
    assert db["ssh"].command == ("true",)
    # Deployer-side: Nix never sees the checks.
    assert "checks" not in inventory.nodes["db"].to_data()


def test_inventory_refuses_bad_checks_naming_the_key(tmp_path: Path) -> None:
    from nixherd.errors import InventoryError
    from nixherd.inventory import load

    path = tmp_path / "inventory.toml"
    path.write_text(
        """
[nodes.a.checks.web]
http = "http://{host}/"
retries = -1
[nodes.a.checks.both]
tcp = "x:1"
command = ["true"]
"""
    )
    with pytest.raises(InventoryError) as info:
        load(str(path))
    messages = [f"{p.path}: {p.message}" for p in info.value.problems]
    assert "nodes.a.checks.web.retries: must be 0..1000, got -1" in messages
    assert "nodes.a.checks.both: exactly one of command, http, tcp, unit is required" in messages


# --- unit checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "unit",
    [
        "app.service",
        "getty@tty1.service",
        "-.mount",
        "dev-disk-by\\x2duuid-1234.device",
        "a:b_c.d-e.timer",
        "user@1000.service",
        "x@a@b.socket",
        "a" * 247 + ".service",
    ],
)
def test_unit_check_takes_systemd_unit_names(unit: str) -> None:
    check, problems = parse_check("svc", {"unit": unit, "retries": 0})
    assert problems == []
    assert check == HealthCheck("svc", CheckKind.UNIT, unit=unit, retries=0)
    assert check.describe() == f"unit {unit}"


@pytest.mark.parametrize(
    ("unit", "problem"),
    [
        ("app", 'unit: not a systemd unit name: "app"'),
        ("app.serv", "unit: not a systemd unit name"),
        (".service", "unit: not a systemd unit name"),
        ("@x.service", "unit: not a systemd unit name"),
        ("getty@.service", 'unit: "getty@.service" is a template: name an instance'),
        ("app service.service", "unit: not a systemd unit name"),
        ("app;reboot.service", "unit: not a systemd unit name"),
        ("$(reboot).service", "unit: not a systemd unit name"),
        ("app*.service", "unit: not a systemd unit name"),
        ("app.service\n", "unit: not a systemd unit name"),
        ("a" * 248 + ".service", "unit: a systemd unit name has at most 255 characters, got 256"),
        (["app.service"], 'unit: must be a systemd unit name such as "app.service", got array'),
        (7, "unit: must be a systemd unit name"),
    ],
)
def test_unit_check_refuses_what_systemd_would(unit: object, problem: str) -> None:
    check, problems = parse_check("svc", {"unit": unit})
    assert check is None
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_unit_check_is_one_kind_only() -> None:
    _, problems = parse_check("svc", {"unit": "a.service", "command": ["true"]})
    assert problems == ["exactly one of command, http, tcp, unit is required"]
    _, problems = parse_check("svc", {"unit": "a.service", "status": 200})
    assert problems == ["status/body: only for http checks"]
    issues = check_issues({"unit": "a b"})
    assert issues is not None and len(issues) == 1
    assert issues[0][0] == ".unit" and issues[0][1].startswith('not a systemd unit name: "a b"')


def test_a_bad_unit_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text('[nodes.a.checks.app]\nunit = "app;reboot"\n')
    argv = [sys.executable, "-m", "nixherd", "-i", str(path), "check"]
    result = process.run(argv, check=False, timeout=60)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    said = result.stdout + result.stderr
    assert f'{path}: nodes.a.checks.app.unit: not a systemd unit name: "app;reboot"' in said, said
