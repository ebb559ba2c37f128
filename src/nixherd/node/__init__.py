"""Operations on one node: probe, copy, activate (the watchdog), health checks, keys, data
files, closure diff, exec, status, reboot. Each takes a node's connection; none fans out."""
