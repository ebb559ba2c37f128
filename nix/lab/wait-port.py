#!/usr/bin/python3
"""lab-wait-port PORT: the ExecStartPost of `lab.service` when it has a port.

Succeeds once 127.0.0.1:PORT accepts a connection; fails at once if the unit's main process
($MAINPID, set by systemd for ExecStartPost) has died, else after 10 s. A failed ExecStartPost
fails the start job, so a service that never listens is a failed unit (switch exits 4).
"""

import os
import socket
import sys
import time

TIMEOUT = 10.0


def alive(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def main(argv: list[str]) -> int:
    port = int(argv[1])
    pid = os.environ.get("MAINPID", "")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return 0
        except OSError:
            pass
        if pid and not alive(pid):
            print(f"lab: the service exited before it listened on port {port}", file=sys.stderr)
            return 1
        time.sleep(0.05)
    print(f"lab: the service does not listen on port {port} after {TIMEOUT:.0f} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
