"""errors.py: how each error renders and which exit code it carries."""

from __future__ import annotations

from nixherd.errors import CommandError, InventoryError, Problem, SelectionError


def test_problem_names_file_and_key() -> None:
    p = Problem("inventory.toml", "nodes.web-1.port", "must be 1..65535, got 70000")
    assert str(p) == "inventory.toml: nodes.web-1.port: must be 1..65535, got 70000"


def test_inventory_error_lists_every_problem_and_exits_2() -> None:
    err = InventoryError([Problem("a.toml", "x", "bad"), Problem("a.toml", "y", "worse")])
    assert err.exit_code == 2
    assert err.render().splitlines() == ["a.toml: x: bad", "a.toml: y: worse"]


def test_command_error_is_copy_pasteable() -> None:
    err = CommandError(["nix", "copy", "--to", "ssh://root@h", "/nix/store/a b"], 1, "x\n" * 50)
    head, *tail = err.render().splitlines()
    assert head == "command failed (exited with 1): nix copy --to ssh://root@h '/nix/store/a b'"
    assert len(tail) == 20


def test_selection_error_exit_code() -> None:
    assert SelectionError("nothing matches").exit_code == 2
