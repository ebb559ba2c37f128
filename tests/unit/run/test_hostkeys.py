"""hostkeys.py: what `ssh -v` logged about a refused host key, and the message built from it.
The samples are OpenSSH 9.2's own output (CR LF line ends included), captured on a lab host;
tests/lab/deploy/test_ssh_config_lab.py checks the same against real hosts end to end."""

from __future__ import annotations

import pytest

from nixherd.errors import CommandError, HostKeyError
from nixherd.run import hostkeys, process
from nixherd.run.hostkeys import Kind, Verdict
from nixherd.run.process import Result
from nixherd.run.ssh import Connection, Target

FP = "SHA256:xTEU0r6jDxO4ZxWziP+4BZu00qECirbMi4hACqtJNHQ"

UNKNOWN = "\r\n".join(
    [
        "debug1: Connecting to 127.0.0.1 [127.0.0.1] port 17968.",
        "debug1: kex: host key algorithm: ssh-ed25519",
        f"debug1: Server host key: ssh-ed25519 {FP}",
        "debug1: checking without port identifier",
        "No ED25519 host key is known for [127.0.0.1]:17968 and you have requested strict "
        "checking.",
        "Host key verification failed.",
        "",
    ]
)

CHANGED = "\r\n".join(
    [
        f"debug1: Server host key: ssh-ed25519 {FP}",
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
        "Add correct host key in /home/u/kh to get rid of this message.",
        "Offending ED25519 key in /home/u/kh:3",
        "  remove with:",
        '  ssh-keygen -f "/home/u/kh" -R "[127.0.0.1]:17968"',
        "Host key for [127.0.0.1]:17968 has changed and you have requested strict checking.",
        "Host key verification failed.",
        "",
    ]
)


def test_an_unknown_key_is_read_from_ssh_output() -> None:
    assert hostkeys.verdict(UNKNOWN) == Verdict(
        Kind.UNKNOWN, "[127.0.0.1]:17968", "ssh-ed25519", FP
    )


def test_a_changed_key_is_read_with_the_line_it_contradicts() -> None:
    assert hostkeys.verdict(CHANGED) == Verdict(
        Kind.CHANGED, "[127.0.0.1]:17968", "ssh-ed25519", FP, "/home/u/kh:3"
    )


def test_the_key_of_the_node_not_of_its_jump_host() -> None:
    jump = "debug1: Server host key: ecdsa-sha2-nistp256 SHA256:jumpjumpjump\r\n"
    found = hostkeys.verdict(jump + UNKNOWN)
    assert found is not None and found.fingerprint == FP


@pytest.mark.parametrize(
    "output",
    [
        "",
        "ssh: connect to host 127.0.0.1 port 22: Connection refused\r\n",
        "Permission denied (publickey).\r\n",
        UNKNOWN.replace("debug1: Server host key", "debug1: other"),  # no key to show
    ],
)
def test_anything_else_is_no_verdict(output: str) -> None:
    assert hostkeys.verdict(output) is None


def test_the_unknown_key_message_shows_the_fingerprint_and_both_ways_to_trust() -> None:
    found = hostkeys.verdict(UNKNOWN)
    assert found is not None
    trust = ["ssh", "-F", "/c", "-o", "StrictHostKeyChecking=accept-new", "--", "a", "true"]
    text = hostkeys.explain(found, known_hosts="/home/u/kh", trust=trust, policy="strict")
    lines = text.splitlines()
    assert lines[0] == "unknown host key: [127.0.0.1]:17968 is not in /home/u/kh"
    assert f"  It offers ED25519 key {FP}." in lines
    assert "    ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" in lines
    assert "    ssh -F /c -o StrictHostKeyChecking=accept-new -- a true" in lines
    assert 'host_key_policy = "accept-new"' in text
    already = hostkeys.explain(found, known_hosts="/k", trust=trust, policy="accept-new")
    assert 'host_key_policy is already "accept-new"' in already


def test_the_changed_key_message_is_sterner_and_never_suggests_the_policy() -> None:
    found = hostkeys.verdict(CHANGED)
    assert found is not None
    text = hostkeys.explain(found, known_hosts="/other", trust=["ssh", "x"], policy="strict")
    assert text.startswith(
        f"HOST KEY CHANGED: [127.0.0.1]:17968 now offers ED25519 key {FP}, not the key "
        "recorded for it (/home/u/kh:3)"
    )
    assert "man in the middle" in text
    assert "    ssh-keygen -R '[127.0.0.1]:17968' -f /home/u/kh" in text.splitlines()
    assert "Or set host_key_policy" not in text


def _fake(monkeypatch: pytest.MonkeyPatch, first: Result | CommandError) -> list[list[str]]:
    """process.run: the node's command gives `first`; `ssh -v` the UNKNOWN log, `ssh -G` the
    settings of a config naming its own known_hosts file."""
    calls: list[list[str]] = []

    def run(argv: list[str], **_: object) -> Result:
        calls.append(list(argv))
        if argv[1] == "-v":
            return Result(tuple(argv), 255, "", UNKNOWN)
        if argv[1] == "-G":
            return Result(tuple(argv), 0, "user root\nuserknownhostsfile /u/kh /u/kh2\n", "")
        if isinstance(first, CommandError):
            raise first
        return first

    monkeypatch.setattr(process, "run", run)
    return calls


def test_a_refused_key_raises_host_key_error_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = Connection(Target(node="n", host="a", ssh_config="/c"), control_dir="/tmp/nh-test")
    failed = "No ED25519 host key is known for a\r\nHost key verification failed.\r\n"
    calls = _fake(monkeypatch, CommandError(["ssh"], 255, failed))
    with pytest.raises(HostKeyError) as info:
        conn.run(["true"])
    assert str(info.value).startswith("unknown host key: [127.0.0.1]:17968 is not in /u/kh\n")
    # The second look goes through the node's own config, never multiplexed.
    verbose = next(c for c in calls if c[1] == "-v")
    assert "/c" in verbose and "ControlPath=none" in verbose
    _fake(monkeypatch, Result(("ssh",), 255, failed, ""))
    with pytest.raises(HostKeyError):
        conn.run(["true"], check=False)


def test_other_ssh_failures_stay_what_they_were(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = Connection(Target(node="n", host="a"), control_dir="/tmp/nh-test")
    refused = CommandError(["ssh"], 255, "ssh: connect to host a port 22: Connection refused")
    calls = _fake(monkeypatch, refused)
    with pytest.raises(CommandError) as info:
        conn.run(["true"])
    assert info.value is refused and len(calls) == 1  # no second look
    # A command of the node's exiting 255 with other output is its own result.
    _fake(monkeypatch, Result(("ssh",), 255, "bye", ""))
    assert conn.run(["true"], check=False).returncode == 255
