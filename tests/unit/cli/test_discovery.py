"""Finding the inventory: the current directory, then its parents up to the repository root;
`-i` and $NIXHERD_INVENTORY win. Runs the command line in-process from directories of a fake
repository."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from nixherd.cli import main

INVENTORY = """\
[nodes.{name}]
host = "127.0.0.1"
"""


def nodes(monkeypatch: pytest.MonkeyPatch, where: Path, *args: str) -> tuple[int, str, str]:
    """`nixherd [args] nodes` run in `where`: exit code, stdout, stderr."""
    monkeypatch.chdir(where)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([*args, "nodes"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("NIXHERD_INVENTORY", raising=False)
    monkeypatch.setenv("NIXHERD_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """outer/ (an inventory above the repository) / repo/ (.git, inventory.toml) / a/b/c."""
    outer = tmp_path / "outer"
    root = outer / "repo"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / ".git").mkdir()
    (outer / "inventory.toml").write_text(INVENTORY.format(name="above-the-repo"))
    (root / "inventory.toml").write_text(INVENTORY.format(name="at-the-root"))
    return root


def test_found_from_a_subdirectory_of_the_repository(
    monkeypatch: pytest.MonkeyPatch, repo: Path
) -> None:
    code, out, err = nodes(monkeypatch, repo / "a" / "b" / "c")
    assert code == 0, err
    assert "at-the-root" in out


def test_the_nearest_inventory_wins(monkeypatch: pytest.MonkeyPatch, repo: Path) -> None:
    (repo / "a" / "inventory.toml").write_text(INVENTORY.format(name="in-a"))
    code, out, err = nodes(monkeypatch, repo / "a" / "b")
    assert code == 0, err
    assert "in-a" in out and "at-the-root" not in out


def test_the_search_stops_at_the_repository_root(
    monkeypatch: pytest.MonkeyPatch, repo: Path
) -> None:
    (repo / "inventory.toml").unlink()
    code, out, err = nodes(monkeypatch, repo / "a" / "b")
    assert code == 2 and out == ""
    # Never the inventory above the repository: it belongs to something else.
    assert "above-the-repo" not in err
    assert err == (
        f"nixherd: error: no inventory.toml in {repo / 'a' / 'b'} or its parents up to the "
        f"repository root {repo}\n"
        "  give one with -i PATH or $NIXHERD_INVENTORY\n"
    )


def test_a_git_file_marks_a_root_too(monkeypatch: pytest.MonkeyPatch, repo: Path) -> None:
    # A worktree or a submodule has a .git file, not a directory.
    sub = repo / "a" / "sub"
    (sub / "x").mkdir(parents=True)
    (sub / ".git").write_text("gitdir: ../../.git/worktrees/sub\n")
    code, _, err = nodes(monkeypatch, sub / "x")
    assert code == 2 and "repository root" in err and str(sub) in err


def test_without_a_repository_the_search_goes_to_the_filesystem_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "x" / "y").mkdir(parents=True)
    (tmp_path / "inventory.toml").write_text(INVENTORY.format(name="no-repo"))
    code, out, err = nodes(monkeypatch, tmp_path / "x" / "y")
    assert code == 0, err
    assert "no-repo" in out


def test_the_option_and_the_environment_win(
    monkeypatch: pytest.MonkeyPatch, repo: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text(INVENTORY.format(name="from-elsewhere"))
    code, out, _ = nodes(monkeypatch, repo / "a", "-i", str(other))
    assert code == 0 and "from-elsewhere" in out
    monkeypatch.setenv("NIXHERD_INVENTORY", str(other))
    code, out, _ = nodes(monkeypatch, repo / "a")
    assert code == 0 and "from-elsewhere" in out
    # An explicit path that does not exist is an error, not a reason to search.
    code, _, err = nodes(monkeypatch, repo / "a", "-i", "missing.toml")
    assert code == 2 and "missing.toml: no such file" in err


def test_in_the_current_directory_messages_name_it_as_before(
    monkeypatch: pytest.MonkeyPatch, repo: Path
) -> None:
    (repo / "inventory.toml").write_text("[nodes.a]\nport = 70000\n")
    code, _, err = nodes(monkeypatch, repo)
    assert code == 2
    assert err.startswith("nixherd: error: inventory.toml: nodes.a.port: must be 1..65535"), err


def test_found_in_a_parent_messages_name_its_path(
    monkeypatch: pytest.MonkeyPatch, repo: Path
) -> None:
    (repo / "inventory.toml").write_text("[nodes.a]\nport = 70000\n")
    code, _, err = nodes(monkeypatch, repo / "a")
    assert code == 2
    expected = f"nixherd: error: {repo / 'inventory.toml'}: nodes.a.port: must be 1..65535"
    assert err.startswith(expected), err


def test_apply_without_any_inventory_says_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, repo: Path
) -> None:
    (repo / "inventory.toml").unlink()
    monkeypatch.chdir(repo / "a")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["apply", "--dry-run"])
    assert code == 2
    assert err.getvalue().startswith(f"nixherd: error: no inventory.toml in {repo / 'a'} "), err
