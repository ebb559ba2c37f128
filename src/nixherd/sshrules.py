"""The ssh rules: the options nixherd never lets an inventory set, the ones a user may override,
and the host-key policies.

They belong to the ssh layer: `run/ssh.py` enforces them where values become ssh argv. They sit in
this small module of their own (shared vocabulary, like errors.py) so that the inventory can
report a violation, naming the file and key, before any work, without loading the process layer:
`nixherd nodes` must start without importing nixherd.run (tests/unit/cli/test_nodes.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# ssh options `ssh_options` may not set (lower-case, as ssh compares them), with the reason shown.
# - Host keys: nixherd passes StrictHostKeyChecking itself, from `host_key_policy` (one spelling
#   of the opt-in, so that `show` can say where it comes from); the others would replace or
#   redirect the pinning against known_hosts (another file, a command, DNS, the key of another
#   host). A deliberate setup can still say so in the `ssh_config` file.
# - BatchMode: a prompt (password, passphrase, unknown key) would stall a parallel run unseen.
# - Multiplexing: nixherd runs one ControlMaster per node, in a directory it removes even when
#   killed; another path or persistence would leave a master behind.
# - Local commands: run through the deployer's shell (ProxyJump needs none).
_HOST_KEYS = "nixherd always verifies host keys"
_POLICY = (
    'use host_key_policy = "accept-new" (for the node, its role or [defaults]) to record a new '
    "host's key on first contact; host keys are always verified, never `no` or `off`"
)
_PROMPT = "nixherd never prompts (a prompt would stall a parallel run): use an agent or a key"
_MULTIPLEXING = "nixherd runs its own ControlMaster (and stops it, even when killed)"
_LOCAL_COMMAND = "it runs a local command through a shell (use ProxyJump, or the ssh_config)"
FORBIDDEN_SSH_OPTIONS: Final[Mapping[str, str]] = {
    "stricthostkeychecking": _POLICY,
    "userknownhostsfile": _HOST_KEYS,
    "globalknownhostsfile": _HOST_KEYS,
    "knownhostscommand": _HOST_KEYS,
    "verifyhostkeydns": _HOST_KEYS,
    "hostkeyalias": _HOST_KEYS,
    "controlmaster": _MULTIPLEXING,
    "controlpath": _MULTIPLEXING,
    "controlpersist": _MULTIPLEXING,
    "localcommand": _LOCAL_COMMAND,
    "permitlocalcommand": _LOCAL_COMMAND,
    "proxycommand": _LOCAL_COMMAND,
    "batchmode": _PROMPT,
}
# nixherd's own defaults (run/ssh.py BASE_OPTIONS) that `ssh_options` may override: ssh keeps the
# first value it obtains, so the node's options go before these on the command line.
OVERRIDABLE: Final[frozenset[str]] = frozenset(
    {"connecttimeout", "serveraliveinterval", "serveralivecountmax"}
)
# `host_key_policy` values and the StrictHostKeyChecking each one passes (never `no`).
HOST_KEY_POLICIES: Final[Mapping[str, str]] = {"strict": "yes", "accept-new": "accept-new"}
