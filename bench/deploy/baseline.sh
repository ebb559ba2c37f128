#!/bin/sh
# The hand-written deploy nixherd is measured against: evaluate and build every node's system
# (one nix eval, one nix-store --realise), then per node `nix copy` + ssh (set the profile,
# switch), P nodes at once (xargs -P).
#
#   baseline.sh FLAKE SSH_CONFIG PARALLEL NODE...
#
# Nodes are lab host names (`Host lab-N` in SSH_CONFIG). No probe, no lock, no rollback, no
# report: the least work that deploys, as someone would script it by hand.
set -eu
flake=$1 cfg=$2 parallel=$3
shift 3

names=""
for node in "$@"; do names="$names \"$node\""; done
# "node drv out" per line, in the order given.
plan=$(nix --extra-experimental-features 'nix-command flakes' eval --raw "$flake#nixosConfigurations" \
  --apply "cs: builtins.concatStringsSep \"\" (map (n: let t = cs.\${n}.config.system.build.toplevel;
    in \"\${n} \${t.drvPath} \${t.outPath}\n\") [ $names ])")
# shellcheck disable=SC2086  # one word per derivation
nix-store --realise $(printf '%s\n' "$plan" | cut -d' ' -f2) >/dev/null

export NIX_SSHOPTS="-F $cfg"
printf '%s\n' "$plan" | cut -d' ' -f1,3 | xargs -P "$parallel" -n 2 sh -c '
  nix --extra-experimental-features nix-command copy --to "ssh://root@$1" "$2" &&
  ssh -F "$0" -o BatchMode=yes "root@$1" \
    "nix-env -p /nix/var/nix/profiles/system --set $2 && $2/bin/switch-to-configuration switch"
' "$cfg"
