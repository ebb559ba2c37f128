"""`nixherd lab up|status|down`: local test hosts (sshd in private namespaces, own Nix stores)."""

from __future__ import annotations

import argparse
import sys

from nixherd.cli import jsonout, numbers

HELP = "local test hosts: up, status, down"

HEADERS = ("NAME", "PORT", "PID", "STATE", "BOOTS", "SYSTEM")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    def with_dir(action: argparse.ArgumentParser) -> None:
        action.add_argument(
            "--dir",
            metavar="DIR",
            help="the lab's state directory (default: $NIXHERD_LAB_DIR or ./lab-state)",
        )

    up = sub.add_parser(
        "up",
        help="start lab-1..lab-N (running hosts are kept)",
        description="Start lab hosts lab-1..lab-N on 127.0.0.1:P..P+N-1 (running hosts are kept) "
        "and write DIR/ssh_config and DIR/known_hosts.",
    )
    with_dir(up)
    up.add_argument(
        "-n", type=numbers.hosts, default=None, metavar="N", help="number of hosts (default 3)"
    )
    up.add_argument(
        "--base-port",
        type=numbers.port,
        default=None,
        metavar="P",
        help="port of lab-1 (default: the lab's, else 2201)",
    )
    jsonout.add_json(up, "the hosts (instead of the table, ssh line and inventory snippet)")
    status = sub.add_parser(
        "status",
        help="show each host: port, pid, state (up: the deploy user logs in), current system; "
        "exit 1 when a host is not up",
    )
    with_dir(status)
    jsonout.add_json(status, "the hosts")
    down = sub.add_parser("down", help="stop the hosts (by recorded pid); keep their files")
    with_dir(down)
    down.add_argument(
        "--purge", action="store_true", help="also delete the lab directory (stores, keys)"
    )


def run(args: argparse.Namespace) -> int:
    from nixherd.cli import render
    from nixherd.lab.hosts import DEFAULT_COUNT, Lab, default_dir
    from nixherd.lab.render import inventory_snippet

    lab = Lab(args.dir or default_dir())
    if args.lab_command == "up":
        hosts = lab.up(args.n if args.n is not None else DEFAULT_COUNT, args.base_port)
        for note in lab.notes:  # changes to the machine itself: said, whatever the output
            sys.stderr.write(f"nixherd: lab: {note}\n")
        if args.json:
            jsonout.emit("lab up", {"hosts": [jsonout.lab_host(h) for h in hosts]})
            return 0
        _table([h.to_data() for h in hosts])
        out = sys.stdout
        out.write(f"\nssh -F {lab.ssh_config} lab-1\n")
        out.write(f'NIX_SSHOPTS="{lab.nix_sshopts}" nix copy --to ssh://root@lab-1 PATH\n')
        out.write("\n# inventory snippet\n")
        out.write(inventory_snippet(lab.hosts(), lab.ssh_config))
        return 0
    if args.lab_command == "status":
        hosts = lab.status()
        data = [h.to_data() for h in hosts]
        if args.json:
            jsonout.emit("lab status", {"hosts": [jsonout.lab_host(h) for h in hosts]})
        elif not data:
            sys.stdout.write(f"no lab hosts in {lab.dir}\n")
        else:
            _table(data)
        # A host that is not up (down, or running but refusing logins) is worth an exit code:
        # scripts and CI wait on `lab status`.
        return 0 if all(h.up for h in hosts) else 1
    stopped = lab.down()
    if args.purge:
        lab.purge()
    done = f"stopped {render.plural(len(stopped), 'host')}"
    sys.stdout.write(done + (f"; deleted {lab.dir}\n" if args.purge else "\n"))
    return 0


def _table(rows: list[dict[str, object]]) -> None:
    from nixherd.cli import render

    render.print_table(
        HEADERS,
        [
            (
                str(r["name"]),
                str(r["port"]),
                str(r["pid"] or "-"),
                str(r["state"]),
                str(r["boots"] if r["boots"] is not None else "-"),
                str(r["system"] or "-"),
            )
            for r in rows
        ],
    )
