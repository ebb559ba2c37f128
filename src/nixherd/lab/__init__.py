"""The lab: real test hosts on this machine (sshd in private namespaces, each with its own /nix).

    hosts.py      `Lab(dir).up(n)`, `.status()`, `.down()`: the state directory and its hosts
    render.py     the text of every file the lab writes (sshd_config, ssh_config, passwd, ...)
    boot.py       script: the launcher and each host's supervisor (outside the host)
    hostinit.py   script: a host's pid 1 (inside), and `reboot` inside a host
    proc.py       processes by pid and start time, shared by all of the above

This package imports nothing itself: the scripts import `proc` at every host boot, and must not
pay for the rest.
"""
