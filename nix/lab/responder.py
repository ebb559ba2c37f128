#!/usr/bin/python3
"""nixherd lab responder: the service of `lab.service.port` when no command is given.

HTTP on 127.0.0.1:$PORT:
  GET / or /health   {"node", "version", "system"} of the running system, as JSON
  GET /status        the same, plus this process's "pid" and how many "reloads" it has done
  GET /data/NAME     a file under /nix/var/lab/data (where `nixherd data push` may put one)

What it serves is read at start and again on SIGHUP (the unit's ExecReload): the system from
/run/current-system, the files under /nix/var/lab/data. A reload is so observable over HTTP
without a restart: the pid stays, the version and data change, the reload counter grows.
"""

import http.server
import json
import os
import signal

CURRENT = "/run/current-system"
DATA = "/nix/var/lab/data"
MAX_FILE = 1 << 20


def read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def snapshot_data() -> dict[str, bytes]:
    """Every regular file under DATA (symlinks not followed), by its path relative to DATA."""
    files: dict[str, bytes] = {}
    for directory, dirs, names in os.walk(DATA):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
        for name in names:
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            with os.fdopen(fd, "rb") as f:
                if os.stat(f.fileno()).st_mode & 0o170000 == 0o100000:
                    files[os.path.relpath(path, DATA)] = f.read(MAX_FILE)
    return files


class State:
    def __init__(self) -> None:
        self.reloads = -1
        self.identity: dict[str, str] = {}
        self.data: dict[str, bytes] = {}
        self.load()

    def load(self) -> None:
        system = os.path.realpath(CURRENT)
        self.identity = {
            "node": read(os.path.join(system, "lab/hostname")),
            "version": read(os.path.join(system, "nixos-version")),
            "system": system,
        }
        self.data = snapshot_data()
        self.reloads += 1


class Handler(http.server.BaseHTTPRequestHandler):
    state: State

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path in ("/", "/health"):
            self.reply(json.dumps(self.state.identity).encode() + b"\n", "application/json")
        elif path == "/status":
            status = {**self.state.identity, "pid": os.getpid(), "reloads": self.state.reloads}
            self.reply(json.dumps(status).encode() + b"\n", "application/json")
        elif path.startswith("/data/") and path[len("/data/") :] in self.state.data:
            self.reply(self.state.data[path[len("/data/") :]], "application/octet-stream")
        else:
            self.send_error(404)

    def reply(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    state = Handler.state = State()
    signal.signal(signal.SIGHUP, lambda _signum, _frame: state.load())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
