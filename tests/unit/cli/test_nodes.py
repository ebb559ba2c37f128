"""`nixherd nodes`: the listing as a table and as JSON, selection, the inventory's location, errors
(exit 2, never a traceback), and a start-up that imports nothing heavy."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonkit
import pytest

from nixherd.cli import COMMANDS, build_parser, main, requested_command
from nixherd.run import process

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT / "examples" / "seed-fleet" / "inventory.toml"


@pytest.fixture(autouse=True, scope="module")
def _private_parse_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The commands' parse cache goes to a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NIXHERD_CACHE_DIR", str(tmp_path_factory.mktemp("parse-cache")))
        yield


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_table_of_the_seed_fleet(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-i", str(SEED), "nodes")
    assert (code, err) == (0, "")
    assert out == (
        "NAME                     ROLE       HOST             USER  PORT  TAGS\n"
        "nixos-hk                 nixos-vps  103.85.224.63    root  -     vps,hk,prod\n"
        "nixos-vps                nixos-vps  10.254.0.2       root  -     vps,container,lab\n"
        "nixos-vps-198-51-100-11  nixos-vps  198.51.100.11    root  -     vps,batch-vps\n"
        "nixos-vps-198-51-100-12  nixos-vps  198.51.100.12    root  -     vps,batch-vps\n"
        "nixos-vps-198-51-100-13  nixos-vps  198.51.100.13    root  -     vps,batch-vps\n"
        "nixos-ws                 nixos-ws   192.168.234.194  luck  -     workstation\n"
    )


def test_json_listing(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "nodes", "--json", "--on", "@vps,!@prod", "-i", str(SEED))
    assert code == 0
    listing = jsonkit.document(out, "nodes")["nodes"]
    assert [n["name"] for n in listing] == [
        "nixos-vps",
        "nixos-vps-198-51-100-11",
        "nixos-vps-198-51-100-12",
        "nixos-vps-198-51-100-13",
    ]
    assert listing[0] == {
        "name": "nixos-vps",
        "role": "nixos-vps",
        "host": "10.254.0.2",
        "user": "root",
        "port": None,  # not set: ssh decides
        "tags": ["vps", "container", "lab"],
    }


def test_a_node_without_role(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text("[nodes.solo]\nport = 2222\n")
    code, out, _ = run(capsys, "-i", str(path), "nodes")
    assert code == 0
    assert out.splitlines()[1].split() == ["solo", "-", "solo", "root", "2222"]
    code, out, _ = run(capsys, "-i", str(path), "nodes", "--json")
    assert jsonkit.document(out, "nodes")["nodes"][0]["role"] is None


def test_inventory_location(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "inventory.toml").write_text("[nodes.here]\n")
    (tmp_path / "env.toml").write_text("[nodes.from-env]\n")
    (tmp_path / "flag.toml").write_text("[nodes.from-flag]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NIXHERD_INVENTORY", raising=False)

    def names(*argv: str) -> list[str]:
        code, out, _ = run(capsys, *argv, "--json")
        assert code == 0
        return [n["name"] for n in jsonkit.document(out, "nodes")["nodes"]]

    assert names("nodes") == ["here"]
    monkeypatch.setenv("NIXHERD_INVENTORY", "env.toml")
    assert names("nodes") == ["from-env"]
    assert names("nodes", "-i", "flag.toml") == ["from-flag"]
    assert names("--inventory", "flag.toml", "nodes") == ["from-flag"]


def test_missing_inventory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, "-i", str(tmp_path / "nope.toml"), "nodes")
    assert (code, out) == (2, "")
    assert err == f"nixherd: error: {tmp_path / 'nope.toml'}: no such file\n"


def test_invalid_inventory_lists_every_problem(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "inventory.toml"
    path.write_text("[nodes.a]\nport = 0\nhost = '-oProxyCommand=x'\n")
    code, out, err = run(capsys, "-i", str(path), "nodes")
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"nixherd: error: {path}: nodes.a.port: must be 1..65535, got 0",
        f"  {path}: nodes.a.host: must be a hostname, an IPv4 or an IPv6 address, got "
        '"-oProxyCommand=x"',
    ]


@pytest.mark.parametrize(
    ("on", "message"),
    [
        ("a,,b", 'nixherd: error: --on "a,,b": empty piece (two commas in a row?)\n'),
        ("nixos-h", 'nixherd: error: --on "nixos-h" matches no node (did you mean nixos-hk'),
    ],
)
def test_bad_selection(capsys: pytest.CaptureFixture[str], on: str, message: str) -> None:
    code, out, err = run(capsys, "-i", str(SEED), "nodes", "--on", on)
    assert (code, out) == (2, "")
    assert err.startswith(message)


def test_a_malformed_selection_is_reported_before_the_inventory_is_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(capsys, "-i", str(tmp_path / "nope.toml"), "nodes", "--on", "@")
    assert code == 2 and "needs a pattern" in err


def python(*args: str, env: dict[str, str] | None = None) -> process.Result:
    return process.run([sys.executable, *args], check=False, env=env, timeout=60)


def test_whole_process(tmp_path: Path) -> None:
    result = python("-m", "nixherd", "-i", str(SEED), "nodes", "--json", "--on", "role:nixos-ws")
    assert result.returncode == 0, result.stderr
    listing = jsonkit.document(result.stdout, "nodes")["nodes"]
    assert [n["name"] for n in listing] == ["nixos-ws"]

    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[nodes.a]\nhost = 'x\xff'\n")
    result = python("-m", "nixherd", "-i", str(bad), "nodes")
    assert result.returncode == 2
    assert (
        result.stderr == f"nixherd: error: {bad}: line 2, column 10: not valid UTF-8 (byte 0xff)\n"
    )


def test_start_up_imports_nothing_heavy() -> None:
    script = (
        "import sys\n"
        "from nixherd.cli import main\n"
        f"code = main(['-i', {str(SEED)!r}, 'nodes', '--json', '--on', '@vps'])\n"
        "heavy = ('rich', 'msgspec', 'tomllib', 'tomlkit', 'nixherd.run', 'nixherd.node',\n"
        "         'nixherd.fleet', 'subprocess', 'difflib')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "print(code, loaded, file=sys.stderr)\n"
    )
    result = python("-c", script, env={"NO_COLOR": "1"})
    assert result.stderr.strip() == "0 []"
    assert jsonkit.document(result.stdout, "nodes")["nodes"]


def test_rich_table_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    code, out, _ = run(capsys, "-i", str(SEED), "nodes", "--on", "nixos-ws")
    assert code == 0
    assert "\x1b[" not in out
    assert [line.split() for line in out.splitlines()] == [
        ["NAME", "ROLE", "HOST", "USER", "PORT", "TAGS"],
        ["nixos-ws", "nixos-ws", "192.168.234.194", "luck", "-", "workstation"],
    ]
    assert os.environ["NO_COLOR"] == "1"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["nodes"], "nodes"),
        (["-i", "x.toml", "nodes", "--json"], "nodes"),
        (["--inventory", "nodes", "show", "a"], "show"),  # an inventory file named `nodes`
        (["--inventory=x.toml", "check"], "check"),
        (["--debug", "show", "--help"], "show"),
        (["--help", "nodes"], None),
        (["--version"], None),
        (["bogus", "nodes"], None),
        ([], None),
    ],
)
def test_only_the_requested_command_is_loaded(argv: list[str], command: str | None) -> None:
    assert requested_command(argv) == command


def test_a_parser_for_one_command_or_for_all(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser("nodes").parse_args(["-i", "x.toml", "nodes", "--on", "@a"])
    assert (args.inventory, args.on, args.json) == ("x.toml", "@a", False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in COMMANDS)


def test_the_collector_is_left_as_it_was(capsys: pytest.CaptureFixture[str]) -> None:
    import gc

    assert gc.isenabled()
    assert main(["-i", str(SEED), "nodes"]) == 0
    assert main(["-i", str(SEED), "nodes", "--on", "nothing"]) == 2
    capsys.readouterr()
    assert gc.isenabled()
