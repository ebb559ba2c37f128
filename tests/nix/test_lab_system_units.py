"""nix/lab/units.nix: `systemd.services` of a lab system rendered as NixOS renders them (unit
files, wants/requires links, the X- keys switch-to-configuration reads, drop-ins for units the
host owns), the `lab.service` shorthand as `app.service`, and bad options refused by name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from labsystems import build, system_expr

from nixherd.errors import CommandError
from nixherd.run import nix

pytestmark = pytest.mark.nix

UNITS = "etc/systemd/system"


def units(out: Path) -> dict[str, str]:
    """Every entry under etc/systemd/system: path -> file text, or "-> target" for a link."""
    tree: dict[str, str] = {}
    root = out / UNITS
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory, name)
            key = str(path.relative_to(root))
            tree[key] = f"-> {os.readlink(path)}" if path.is_symlink() else path.read_text()
    return tree


def value(text: str, key: str) -> str:
    """The first value of `key` in a unit's text."""
    line = next(line for line in text.splitlines() if line.startswith(f"{key}="))
    return line.split("=", 1)[1]


def exec_path(text: str, key: str) -> Path:
    return Path(value(text, key).split()[0])


def test_a_service_renders_as_nixos_writes_it() -> None:
    out = build(
        """
        { networking.hostName = "u"; systemd.services.worker = {
            description = "The worker";
            script = "echo start";
            reload = "echo reload";
            after = [ "network.target" "app.service" ];
            wants = [ "network.target" ];
            wantedBy = [ "multi-user.target" ];
            requiredBy = [ "app.service" ];
            environment = { B = "two words"; A = 1; GONE = null; };
            path = [ "/opt/tool" ];
            serviceConfig = { Type = "simple"; Restart = "on-failure"; RemainAfterExit = false;
                              ExecStartPre = [ "/bin/true" "/bin/echo pre" ]; };
            unitConfig.StartLimitBurst = 3;
            stopIfChanged = false;
        }; }
        """
    )
    tree = units(out)
    text = tree.pop("worker.service")
    start, reload = exec_path(text, "ExecStart"), exec_path(text, "ExecReload")
    assert text == (
        "[Unit]\n"
        "After=network.target app.service\n"
        "Description=The worker\n"
        "StartLimitBurst=3\n"
        "Wants=network.target\n"
        "\n[Service]\n"
        'Environment="A=1"\n'
        'Environment="B=two words"\n'
        'Environment="PATH=/opt/tool/bin:/opt/tool/sbin:/usr/sbin:/usr/bin:/sbin:/bin"\n'
        "X-StopIfChanged=false\n"
        f"ExecReload={reload}\n"
        f"ExecStart={start}\n"
        "ExecStartPre=/bin/true\n"
        "ExecStartPre=/bin/echo pre\n"
        "RemainAfterExit=false\n"
        "Restart=on-failure\n"
        "Type=simple\n"
        "\n[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    assert tree == {
        "multi-user.target.wants/worker.service": "-> ../worker.service",
        "app.service.requires/worker.service": "-> ../worker.service",
    }
    # Scripts are executables of their own in the store, run by the host's sh with `set -e`.
    assert start.name.endswith("-unit-script-worker-start")
    assert start.read_text() == "#!/bin/sh\nset -e\necho start\n"
    assert os.access(start, os.X_OK)
    assert reload.read_text() == "#!/bin/sh\nset -e\necho reload\n"


@pytest.mark.parametrize(
    ("flags", "keys"),
    [
        ("", []),
        ("reloadIfChanged = true;", ["X-ReloadIfChanged=true"]),
        ("restartIfChanged = false;", ["X-RestartIfChanged=false"]),
        # As NixOS: reloadIfChanged wins, restartIfChanged is then not written.
        ("reloadIfChanged = true; restartIfChanged = false;", ["X-ReloadIfChanged=true"]),
        ("stopIfChanged = false;", ["X-StopIfChanged=false"]),
    ],
)
def test_switch_keys(flags: str, keys: list[str]) -> None:
    out = build(f'{{ systemd.services.s = {{ script = "true"; {flags} }}; }}')
    text = units(out)["s.service"]
    assert [line for line in text.splitlines() if line.startswith("X-")] == keys


def test_triggers_change_the_unit_and_only_theirs() -> None:
    def unit(trigger: str) -> str:
        module = (
            '{ systemd.services.s = { script = "true"; '
            f'restartTriggers = [ "{trigger}" ]; reloadTriggers = [ "r" ]; }}; '
            '  systemd.services.t.script = "true"; }'
        )
        tree = units(build(module))
        return tree["s.service"] + "\0" + tree["t.service"]

    one, two = unit("v1").split("\0"), unit("v2").split("\0")
    assert one[0] != two[0]
    assert one[1] == two[1]  # another unit is not touched by s's triggers
    assert Path(value(one[0], "X-Restart-Triggers")).read_text() == "v1"
    assert Path(value(one[0], "X-Reload-Triggers")).read_text() == "r"


def test_units_the_host_owns_get_drop_ins() -> None:
    out = build(
        """
        { systemd.services.sshd.restartTriggers = [ "keys-v2" ];
          systemd.services.nix-daemon = { overrideStrategy = "asDropin";
                                          serviceConfig.ExecStart = "/bin/true"; };
          systemd.services.gone = { script = "true"; enable = false; }; }
        """
    )
    tree = units(out)
    assert sorted(tree) == ["nix-daemon.service.d/overrides.conf", "sshd.service.d/overrides.conf"]
    assert tree["sshd.service.d/overrides.conf"].startswith(
        "[Unit]\nX-Restart-Triggers=/nix/store/"
    )
    assert "ExecStart=/bin/true" in tree["nix-daemon.service.d/overrides.conf"]


def test_lab_service_is_app_service() -> None:
    out = build('{ networking.hostName = "h"; lab.version = "3"; lab.service.port = 18080; }')
    tree = units(out)
    assert sorted(tree) == ["app.service", "multi-user.target.wants/app.service"]
    assert tree["app.service"] == (
        "[Unit]\n"
        "Description=nixherd lab service (lab.service)\n"
        "\n[Service]\n"
        'Environment="LAB_NODE=h"\n'
        f'Environment="LAB_SYSTEM={out}"\n'
        'Environment="LAB_VERSION=3"\n'
        'Environment="PORT=18080"\n'
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        f"ExecStart={out}/sw/bin/lab-responder\n"
        f"ExecStartPost={out}/sw/bin/lab-wait-port 18080\n"
        "\n[Install]\n"
        "WantedBy=multi-user.target\n"
    )


def test_lab_service_renamed_refined_and_with_a_command() -> None:
    out = build(
        """
        { lab.service = { name = "web"; command = "exec sleep 100"; };
          systemd.services.web = { reloadIfChanged = true; wantedBy = [ "default.target" ]; }; }
        """
    )
    tree = units(out)
    text = tree["web.service"]
    assert "X-ReloadIfChanged=true\n" in text
    assert "WantedBy=multi-user.target default.target\n" in text
    assert "ExecStartPost" not in text  # no port: nothing to wait for
    assert 'Environment="PORT="\n' in text
    assert exec_path(text, "ExecStart").read_text() == "#!/bin/sh\nset -e\nexec sleep 100\n"
    assert "default.target.wants/web.service" in tree


def test_no_service_no_units() -> None:
    out = build("{ lab.service = null; }")
    assert units(out) == {}


@pytest.mark.parametrize(
    ("module", "message"),
    [
        (
            '{ systemd.services.s = { script = "x"; wantedby = [ ]; }; }',
            "systemd.services.s.wantedby",
        ),
        ('{ systemd.services.s.wantedBy = [ "multi-user" ]; }', "systemd.services.s.wantedBy"),
        ('{ systemd.services.s.after = "a.service"; }', "systemd.services.s.after"),
        ("{ systemd.services.s.serviceConfig.Exec = { a = 1; }; }", "serviceConfig.Exec"),
        ('{ systemd.services.s.serviceConfig.ExecStart = "a\\nb"; }', "serviceConfig.ExecStart"),
        ('{ systemd.services.s.environment."A-B" = "x"; }', "environment.A-B"),
        ("{ systemd.services.s.script = 1; }", "systemd.services.s.script"),
        ('{ systemd.services.s.reloadIfChanged = "yes"; }', "reloadIfChanged"),
        ('{ systemd.services."a b".script = "x"; }', "systemd.services.a b"),
        ('{ systemd.services."a.service".script = "x"; }', "no service name"),
        ("{ systemd.services = [ ]; }", "systemd.services must be an attribute set"),
        ('{ lab.service = { name = "x y"; port = 1; }; }', "lab.service.name"),
        ('{ lab.files."systemd/system/x.service" = "x"; }', "lab.files: systemd/"),
    ],
)
def test_bad_units_are_refused_by_name(module: str, message: str) -> None:
    expr = f"({system_expr(module)}).config.system.build.toplevel.drvPath"
    with pytest.raises(CommandError, match=message) as refused:
        nix.eval_expr_json(expr)
    assert "nixherd lab:" in str(refused.value)
