"""One small typed function per nix operation, asking nix for machine-readable output.

Speaks the subset of the CLI that Debian's Nix 2.8, current Nix (2.18+) and Lix all accept, and
parses both JSON shapes where they differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nixherd.errors import CommandError, UsageError
from nixherd.run import process

EXPERIMENTAL = ("--extra-experimental-features", "nix-command flakes")


def nix_argv(*args: str) -> list[str]:
    """The argv of a `nix` subcommand with the experimental features it needs switched on."""
    return ["nix", *EXPERIMENTAL, *args]


# --- the user's Nix flags ---
#
# Spelled as Nix 2.8 spells them (`nix --help`: --show-trace, --print-build-logs/-L, --impure,
# --option NAME VALUE, --builders, --max-jobs), which later Nix releases keep. The
# legacy `nix-store` takes --show-trace, --option, --builders and --max-jobs, but not -L (it
# prints build logs anyway) nor --impure (it evaluates nothing).

# A Nix setting's name (`max-jobs`, `extra-substituters`, `allow-import-from-derivation`).
_SETTING = re.compile(r"[A-Za-z][A-Za-z0-9-]*").fullmatch
_MAX_JOBS = re.compile(r"auto|[0-9]+").fullmatch
# Settings whose value is a secret: on argv it would be seen by every user of the machine
# (`ps`) and copied into nixherd's error messages, logs and reports with the failing command.
SECRET_SETTINGS = frozenset({"access-tokens", "extra-access-tokens"})


@dataclass(frozen=True, slots=True)
class NixFlags:
    """Nix flags the user asked for, handed to every local `nix eval` and build of a run.

    Built once (by the CLI) and turned into argv here only. Values are checked where their form
    is known; whether Nix knows a setting and takes its value is Nix's to say (`check_options`).
    """

    show_trace: bool = False
    print_build_logs: bool = False
    impure: bool = False
    options: tuple[tuple[str, str], ...] = ()
    builders: str | None = None
    max_jobs: str | None = None  # a number or "auto", as Nix's max-jobs setting takes it

    def __post_init__(self) -> None:
        for name, _value in self.options:
            if not _SETTING(name):
                raise UsageError(
                    f"--option {name!r}: not a Nix setting name (letters, digits and '-')"
                )
            if name in SECRET_SETTINGS:
                raise UsageError(
                    f"--option {name}: a secret does not go on the command line (other users "
                    "see it, and failing commands are logged); set it in nix.conf or in the "
                    "NIX_CONFIG environment variable, which nix reads from nixherd's environment"
                )
        if self.max_jobs is not None and not _MAX_JOBS(self.max_jobs):
            raise UsageError(f"--max-jobs: must be a number or 'auto', got {self.max_jobs!r}")

    def _common(self) -> list[str]:
        argv = ["--show-trace"] if self.show_trace else []
        for name, value in self.options:
            argv += ["--option", name, value]  # VALUE is one word, whatever it holds
        if self.builders is not None:
            argv += ["--builders", self.builders]
        if self.max_jobs is not None:
            argv += ["--max-jobs", self.max_jobs]
        return argv

    def eval_args(self) -> list[str]:
        """For `nix eval` (whose evaluation may build: import from derivation)."""
        argv = self._common()
        if self.print_build_logs:
            argv.append("--print-build-logs")
        if self.impure:
            argv.append("--impure")
        return argv

    def realise_args(self) -> list[str]:
        """For `nix-store --realise` here."""
        return self._common()

    def words(self) -> list[str]:
        """Every flag, as the user would type them to nixherd (for plans and reports)."""
        argv = self._common()
        argv += ["-L"] if self.print_build_logs else []
        argv += ["--impure"] if self.impure else []
        return argv


NO_FLAGS = NixFlags()

# How Nix reports a setting it does not know, or a value it refuses ("configuration setting
# 'max-jobs' should be ...", "Boolean setting 'x' has invalid value ..."): a warning, after which
# it goes on without the setting, so the run would silently ignore what the user asked.
_UNKNOWN = re.compile(r"warning: unknown setting '(?P<name>[^']*)'").fullmatch
_REFUSED = re.compile(r"warning: error: (?P<why>.*\bsetting '(?P<name>[^']*)'.*)").fullmatch


def check_options(flags: NixFlags, *, env: Mapping[str, str] | None = None) -> None:
    """Ask this machine's Nix whether it knows every `--option` NAME and takes its VALUE.

    One `nix eval` of a constant with them (about 30 ms), only when there are options:
    Nix itself judges, aliases (`build-cores`) and `extra-` forms included. UsageError naming
    the setting when Nix warns about one.
    """
    if not flags.options:
        return
    # Before the subcommand: Nix 2.8 warns about unknown settings only there.
    options = [word for name, value in flags.options for word in ("--option", name, value)]
    argv = ["nix", *EXPERIMENTAL, *options, "eval", "--expr", "null"]
    try:
        result = process.run(argv, env=env, timeout=60, what="nix eval")
    except CommandError as exc:
        raise UsageError(f"--option: nix refused the options:\n{exc.tail(5)}") from exc
    for line in result.stderr.splitlines():
        unknown = _UNKNOWN(line.strip())
        if unknown is not None:
            raise UsageError(
                f"--option {unknown['name']}: Nix has no such setting (`nix show-config` "
                "lists them)"
            )
        refused = _REFUSED(line.strip())
        if refused is not None:
            raise UsageError(f"--option {refused['name']}: Nix refused it: {refused['why']}")


def eval_json(
    installable: str,
    *,
    apply: str | None = None,
    extra: Sequence[str] = (),
    flags: NixFlags = NO_FLAGS,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Any:
    """`nix eval --json INSTALLABLE [--apply F]`, decoded.

    On failure, the CommandError carries nix's stderr alone: the JSON nix had printed before
    the error is no part of the message.
    """
    argv = nix_argv("eval", "--json", installable, *extra, *flags.eval_args())
    if apply is not None:
        argv += ["--apply", apply]
    result = process.run(argv, env=env, timeout=timeout, what="nix eval", check=False)
    if not result.ok:
        raise CommandError(argv, result.returncode, result.stderr, what="nix eval")
    return json.loads(result.stdout)


def eval_expr_json(
    expr: str,
    *,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Any:
    """`nix eval --json --impure --expr EXPR`, decoded (for expressions built by nixherd)."""
    argv = nix_argv("eval", "--json", "--impure", "--expr", expr, *extra)
    result = process.run(argv, env=env, timeout=timeout, what="nix eval")
    return json.loads(result.stdout)


def nix_string(value: str) -> str:
    """A Nix string literal holding `value` exactly (for expressions nixherd builds)."""
    return json.dumps(value).replace("${", "\\${")


# --- building, realising and copying (the deploy pipeline's nix operations) ---
#
# Builds go through `nix-store --realise` rather than `nix build`: Nix 2.8 builds a bare `.drv`
# installable while 2.15+ needs `drv^*` (which 2.8 rejects); `nix-store --realise DRV` means the
# same everywhere, Lix included.


def realise_argv(
    paths: Sequence[str], *, keep_going: bool = True, flags: NixFlags = NO_FLAGS
) -> list[str]:
    """`nix-store --realise` of derivations (or store paths), local or on a node."""
    going = ["--keep-going"] if keep_going else []
    return ["nix-store", "--realise", *going, *flags.realise_args(), *paths]


def realise(
    drvs: Sequence[str],
    *,
    keep_going: bool = True,
    flags: NixFlags = NO_FLAGS,
    env: Mapping[str, str] | None = None,
    on_line: process.LineCallback | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Build every derivation in ONE nix process; returns the output paths it printed.

    With `keep_going`, one failing derivation does not stop the others; the CommandError it
    raises still leaves every buildable output built (ask `invalid_paths` which are missing).
    """
    result = process.run(
        realise_argv(drvs, keep_going=keep_going, flags=flags),
        env=env,
        on_line=on_line,
        timeout=timeout,
        what="nix-store --realise",
    )
    return [line for line in result.stdout.splitlines() if line.startswith("/")]


def invalid_paths(paths: Sequence[str], *, env: Mapping[str, str] | None = None) -> set[str]:
    """Which of `paths` are not valid in the local store (one process for all)."""
    if not paths:
        return set()
    result = process.run(
        ["nix-store", "--check-validity", "--print-invalid", *paths],
        env=env,
        what="nix-store --check-validity",
    )
    return {line.strip() for line in result.stdout.splitlines() if line.strip()}


def add_root_argv(root: str, path: str) -> list[str]:
    return ["nix-store", "--realise", "--add-root", root, "--indirect", path]


def add_root(root: str, path: str, *, env: Mapping[str, str] | None = None) -> None:
    """Keep `path` alive: an (indirect) GC root at `root`, replacing an older one."""
    process.run(add_root_argv(root, path), env=env, what="nix-store --add-root")


def copy_argv(
    paths: Sequence[str],
    *,
    to: str,
    derivation: bool = False,
    substitute_on_destination: bool = False,
) -> list[str]:
    """`nix copy --to URI PATHS`: the closure of PATHS (of the .drv files with `derivation`)."""
    argv = nix_argv("copy", "--to", to)
    if derivation:
        argv.append("--derivation")
    if substitute_on_destination:
        argv.append("--substitute-on-destination")
    return [*argv, *paths]


def copy(
    paths: Sequence[str],
    *,
    to: str,
    env: Mapping[str, str] | None = None,
    derivation: bool = False,
    substitute_on_destination: bool = False,
    on_line: process.LineCallback | None = None,
    timeout: float | None = None,
    node: str | None = None,
) -> None:
    """Copy closures to another store (a node's, through `ssh://` and NIX_SSHOPTS in `env`)."""
    process.run(
        copy_argv(
            paths,
            to=to,
            derivation=derivation,
            substitute_on_destination=substitute_on_destination,
        ),
        env=env,
        on_line=on_line,
        timeout=timeout,
        what="nix copy",
        node=node,
    )


# --- closures (diff) ---


def path_info_argv(paths: Sequence[str], *, store: str | None = None) -> list[str]:
    """`nix path-info -r --json PATHS`: every path of the closures, with its NAR size."""
    argv = nix_argv("path-info", "--recursive", "--json")
    if store is not None:
        argv += ["--store", store]
    return [*argv, *paths]


def parse_path_info(text: str) -> dict[str, int]:
    """Store path -> NAR size from `nix path-info --json`, in either shape.

    Up to 2.18 it is a list of objects carrying `path`; from 2.19 on an object keyed by path
    (a path that is not valid maps to null there).
    """
    data = json.loads(text)
    sizes: dict[str, int] = {}
    if isinstance(data, list):
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                sizes[entry["path"]] = int(entry.get("narSize") or 0)
    elif isinstance(data, dict):
        for path, entry in data.items():
            if isinstance(entry, dict):
                sizes[path] = int(entry.get("narSize") or 0)
    else:
        raise ValueError("nix path-info --json: neither a list nor an object")
    return sizes


def closure_sizes(
    paths: Sequence[str],
    *,
    store: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    node: str | None = None,
) -> dict[str, int]:
    """The closure of `paths` (in the local store, or `store` such as `ssh://...`), with sizes."""
    result = process.run(
        path_info_argv(paths, store=store),
        env=env,
        timeout=timeout,
        what="nix path-info",
        node=node,
    )
    return parse_path_info(result.stdout)


# --- binary caches (delivery through a cache) ---
#
# Checked on Nix 2.8 (the lab's): `nix store sign --key-file FILE --recursive PATHS` signs the
# closure in the local store; `nix copy --to file:///DIR PATHS` writes NARs, narinfos and those
# signatures; on a node, `nix-store --realise PATH` with the substituter and key given as options
# fetches the closure, as root and as a trusted user through the daemon, and refuses a path whose
# narinfo carries no signature of a trusted key ("is not signed by any of the keys in
# 'trusted-public-keys'", exit 1).


def sign_argv(paths: Sequence[str], *, key_file: str) -> list[str]:
    """`nix store sign --key-file FILE --recursive PATHS`: the key's path is on argv, never the
    key (Nix reads the file)."""
    return nix_argv("store", "sign", "--key-file", key_file, "--recursive", *paths)


def sign(
    paths: Sequence[str],
    *,
    key_file: str,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> None:
    """Sign the closures of `paths` in the local store with the secret key in `key_file`."""
    process.run(
        sign_argv(paths, key_file=key_file), env=env, timeout=timeout, what="nix store sign"
    )


def substitute_argv(paths: Sequence[str], *, url: str, public_key: str) -> list[str]:
    """`nix-store --realise PATHS` on a node, from the cache at `url` alone, trusting `public_key`
    alone: the node's own substituters and keys are replaced for this call, so a path the key
    did not sign is refused whatever the node trusts otherwise. Negative narinfo lookups are not
    cached (the default keeps a miss for an hour: a node asking before a push would keep missing
    afterwards), and a cache that does not answer fails the call within seconds."""
    options = {
        "substituters": url,
        "trusted-public-keys": public_key,
        "narinfo-cache-negative-ttl": "0",
        "connect-timeout": "10",
    }
    argv = ["nix-store", "--realise"]
    for name, value in options.items():
        argv += ["--option", name, value]
    return [*argv, *paths]
