"""A binary cache over HTTP for the lab: Debian's nginx serving a `file://` cache directory on
127.0.0.1, with an access log (which node fetched what), started and stopped by pid.

Lab hosts share the machine's network namespace, so every host reaches it at
http://127.0.0.1:PORT. The deployer pushes with `nix copy --to file://DIR`; nginx serves DIR as
Nix's HTTP binary cache layout (nix-cache-info, HASH.narinfo, nar/...), which is all a static
file server has to do (NixOS/nix src/libstore/http-binary-cache-store.cc fetches those paths).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from nixherd.errors import LabError
from nixherd.run import process

_CONFIG = """\
daemon off;
worker_processes 1;
# Root's own master forks workers as root too: the cache directory may sit in a directory only
# root can enter (a test's temporary directory).
user root root;
pid {state}/nginx.pid;
error_log {state}/error.log;
events {{ worker_connections 512; }}
http {{
  access_log {state}/access.log;
  client_body_temp_path {state}/tmp;
  proxy_temp_path {state}/tmp;
  fastcgi_temp_path {state}/tmp;
  uwsgi_temp_path {state}/tmp;
  scgi_temp_path {state}/tmp;
  types {{ text/x-nix-narinfo narinfo; }}
  default_type application/octet-stream;
  server {{
    listen 127.0.0.1:{port};
    root {root};
  }}
}}
"""


class CacheServer:
    """nginx serving `root` on 127.0.0.1:`port`; its files (config, logs, pid) in `state`."""

    def __init__(self, root: str | os.PathLike[str], state: str | os.PathLike[str], port: int):
        self.root = os.path.abspath(root)
        self.state = os.path.abspath(state)
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def access_log(self) -> str:
        return os.path.join(self.state, "access.log")

    def start(self, timeout: float = 10.0) -> None:
        """Start nginx and wait until it answers on its port."""
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise LabError("the lab's cache server needs nginx (apt-get install nginx-light)")
        os.makedirs(os.path.join(self.state, "tmp"), exist_ok=True)
        os.makedirs(self.root, exist_ok=True)
        config = os.path.join(self.state, "nginx.conf")
        Path(config).write_text(_CONFIG.format(state=self.state, root=self.root, port=self.port))
        self.proc = process.spawn(
            [nginx, "-c", config, "-p", self.state + "/", "-e", f"{self.state}/error.log"],
            log_path=os.path.join(self.state, "nginx.out"),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"nginx exited at start ({self.state}/error.log): {self._errors()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise LabError(f"nginx did not listen on 127.0.0.1:{self.port} in {timeout:.0f} s")

    def stop(self) -> None:
        """Stop the nginx this object started, by its pid (its workers are in the session it
        leads: a master that will not quit is killed with its whole session)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # nginx: fast shutdown, workers included
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def requests(self) -> list[str]:
        """The access log's lines so far."""
        try:
            return Path(self.access_log).read_text().splitlines()
        except FileNotFoundError:
            return []

    def _errors(self) -> str:
        try:
            return Path(self.state, "error.log").read_text().strip()[-500:]
        except FileNotFoundError:
            return "(no error log)"

    def __enter__(self) -> CacheServer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
