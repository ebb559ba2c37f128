# nixherd activation watchdog: POSIX sh, run on a target node, driven by nixherd over ssh.
#
#   sh watchdog.sh ID start GOAL TOPLEVEL PROFILE ROLLBACK CONFIRM_SECS TIMEOUT_SECS BY
#   sh watchdog.sh ID run                    (detached; started by `start`)
#   sh watchdog.sh ID wait OFFSET MAX_SECS   (streams the log until the status settles)
#   sh watchdog.sh ID confirm MAX_SECS       (sent over a fresh ssh connection)
#   sh watchdog.sh ID abort MAX_SECS         (reason on stdin: a health check failed)
#   sh -s -- - info                          (what the node runs and its generations)
#
# State lives in /run/nixherd/act-ID (tmpfs: a reboot forgets it). The per-node lock is the
# symlink /run/nixherd/lock whose text is "ID PID SINCE BY": creating a symlink is atomic and
# carries its owner with it. The watchdog holds the lock until the activation is settled
# (confirmed, rolled back, or finished), so a second deploy fails at once.
#
# Status words (file `status`): starting, activating, waiting (for the confirmation), and the
# settled ones: done, confirmed, failed REASON, rolled-back REASON, rollback-failed REASON.

set -u
PATH=/run/current-system/sw/bin:/run/wrappers/bin:/nix/var/nix/profiles/default/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
umask 077

base=/run/nixherd
lock=$base/lock
profile=/nix/var/nix/profiles/system
id=$1
mode=$2
shift 2
d=$base/act-$id

put() { printf '%s\n' "$2" >"$d/$1.tmp" && mv -f "$d/$1.tmp" "$d/$1"; }
get() { cat "$d/$1" 2>/dev/null || true; }
say() { printf 'nixherd: %s\n' "$*"; }
nap() { sleep 0.2 2>/dev/null || sleep 1; }
now() { date +%s; }

current() {
    if [ -e /run/current-system ]; then readlink -f /run/current-system; fi
}

gen_of() {
    # system-12-link -> 12
    readlink "$1" 2>/dev/null | sed -n 's/^system-\([0-9][0-9]*\)-link$/\1/p'
}

owner_alive() {
    # $1: the lock text. Alive when its pid runs and still is a nixherd watchdog.
    set -- $1
    [ $# -ge 2 ] || return 1
    kill -0 "$2" 2>/dev/null || return 1
    tr '\000' ' ' <"/proc/$2/cmdline" 2>/dev/null | grep -q nixherd
}

take_lock() {
    ln -s "$1" "$lock" 2>/dev/null && return 0
    held=$(readlink "$lock" 2>/dev/null) || held=
    if [ -n "$held" ] && owner_alive "$held"; then
        return 1
    fi
    # The holder died without releasing (killed, or a crash): take it over, once.
    rm -f "$lock"
    ln -s "$1" "$lock" 2>/dev/null
}

retake_lock() {
    # Hand the lock from `start` to the detached watchdog (same ID, new pid), atomically.
    ln -s "$1" "$lock.$$" && mv -f "$lock.$$" "$lock"
}

release_lock() {
    case $(readlink "$lock" 2>/dev/null) in
    "$id "*) rm -f "$lock" ;;
    esac
}

# Run switch-to-configuration detached in its own process group, bounded by a timeout.
# Sets rc (124 on timeout).
stc() {
    top=$1 action=$2 limit=$3
    rm -f "$d/rc"
    if [ ! -x "$top/bin/switch-to-configuration" ]; then
        say "$top/bin/switch-to-configuration: not found"
        rc=127
        return
    fi
    (exec setsid sh -c '"$1/bin/switch-to-configuration" "$2"; echo $? >"$3.tmp"; mv -f "$3.tmp" "$3"' \
        stc "$top" "$action" "$d/rc") &
    pid=$!
    end=$(($(now) + limit))
    while [ ! -f "$d/rc" ]; do
        if [ "$(now)" -ge "$end" ]; then
            say "switch-to-configuration $action did not finish within ${limit}s: stopping it"
            kill -TERM "-$pid" 2>/dev/null
            sleep 2
            kill -KILL "-$pid" 2>/dev/null
            rc=124
            return
        fi
        nap
    done
    wait "$pid" 2>/dev/null
    rc=$(cat "$d/rc")
}

rollback() {
    reason=$1
    put status "rolling-back $reason"
    say "rolling back ($reason)"
    good=1
    prev=$(get previous)
    prevgen=$(get prevgen)
    newgen=$(get newgen)
    case $(get profile) in
    none) ;;
    *)
        if [ -n "$prevgen" ]; then
            nix-env -p "$profile" --switch-generation "$prevgen" || good=0
            if [ "$(get profile)" = set ] && [ -n "$newgen" ] && [ "$newgen" != "$prevgen" ]; then
                nix-env -p "$profile" --delete-generations "$newgen" || true
            fi
        elif [ -n "$newgen" ]; then
            # First generation ever: nothing to go back to, so the profile goes away.
            rm -f "$profile" "$profile-$newgen-link"
        fi
        ;;
    esac
    if [ -n "$prev" ]; then
        case $(get goal) in
        switch) action=switch ;;
        *) action=test ;;
        esac
        stc "$prev" "$action" "$(get timeout)"
        [ "$rc" = 0 ] || { say "re-activating $prev failed (exit $rc)"; good=0; }
    else
        say "no previous system to go back to"
        good=0
    fi
    if [ "$good" = 1 ]; then
        put status "rolled-back $reason"
        say "rolled back to ${prev:-nothing}"
    else
        put status "rollback-failed $reason"
    fi
}

start() {
    goal=$1 top=$2 pmode=$3 rb=$4 csecs=$5 tsecs=$6 by=$7
    since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    if ! take_lock "$id $$ $since $by"; then
        set -- $(readlink "$lock" 2>/dev/null)
        echo "locked since=${3:-?} pid=${2:-?} by=${4:-?}"
        rm -rf "$d"
        exit 75
    fi
    # Old activations' state: keep the last few for inspection.
    ls -1dt "$base"/act-* 2>/dev/null | tail -n +11 | while read -r old; do rm -rf "$old"; done
    put goal "$goal"
    put toplevel "$top"
    put profile "$pmode"
    put rollback "$rb"
    put window "$csecs"
    put timeout "$tsecs"
    put previous "$(current)"
    put prevgen "$(gen_of "$profile")"
    put newgen ""
    put status starting
    : >"$d/log"
    rm -f "$d/confirmed" "$d/abort"
    # Detached, so that an ssh drop or a network restart cannot kill a half-done switch.
    if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
        systemd-run --unit="nixherd-activate-$id" --collect --quiet \
            -- sh "$d/watchdog.sh" "$id" run || {
            release_lock
            echo "systemd-run failed"
            exit 1
        }
    else
        setsid sh "$d/watchdog.sh" "$id" run </dev/null >>"$d/log" 2>&1 &
    fi
    # Keep the lock until the watchdog has taken it over.
    i=0
    while [ "$(get status)" = starting ]; do
        i=$((i + 1))
        if [ "$i" -gt 100 ]; then
            release_lock
            echo "the watchdog did not start"
            exit 1
        fi
        nap
    done
    echo "previous=$(get previous)"
    echo "prevgen=$(get prevgen)"
}

run() {
    exec </dev/null >>"$d/log" 2>&1
    trap '' HUP INT PIPE
    set -- $(readlink "$lock")
    retake_lock "$id $$ ${3:-?} ${4:-?}"
    put status activating
    goal=$(get goal)
    top=$(get toplevel)
    pmode=$(get profile)
    tsecs=$(get timeout)
    case $pmode in
    set)
        say "setting the system profile to $top"
        if ! nix-env -p "$profile" --set "$top"; then
            put status "failed profile"
            release_lock
            exit 0
        fi
        put newgen "$(gen_of "$profile")"
        ;;
    gen:*)
        say "switching the system profile to generation ${pmode#gen:}"
        if ! nix-env -p "$profile" --switch-generation "${pmode#gen:}"; then
            put status "failed profile"
            release_lock
            exit 0
        fi
        ;;
    esac
    say "switch-to-configuration $goal"
    stc "$top" "$goal" "$tsecs"
    if [ "$(get rollback)" != 1 ]; then
        if [ "$rc" = 0 ]; then put status done; else put status "failed activation-exit-$rc"; fi
        release_lock
        exit 0
    fi
    if [ "$rc" != 0 ]; then
        rollback "activation-exit-$rc"
        release_lock
        exit 0
    fi
    put status waiting
    end=$(($(now) + $(get window)))
    while :; do
        if [ -f "$d/abort" ]; then
            rollback "aborted"
            break
        fi
        if [ -f "$d/confirmed" ]; then
            put status confirmed
            say "confirmed"
            break
        fi
        if [ "$(now)" -ge "$end" ]; then
            rollback "timeout"
            break
        fi
        nap
    done
    release_lock
}

settled() {
    case $1 in
    starting | activating | waiting | rolling-back*) return 1 ;;
    esac
    return 0
}

# The status as the deployer should see it: "lost" when the watchdog died unsettled.
observe() {
    s=$(get status)
    if [ -n "$s" ] && ! settled "$s"; then
        held=$(readlink "$lock" 2>/dev/null) || held=
        case $held in
        "$id "*) owner_alive "$held" || s="lost $s" ;;
        *) s="lost $s" ;;
        esac
        # The watchdog may have settled and released the lock between the two reads above.
        case $s in
        lost*) settled "$(get status)" && s=$(get status) ;;
        esac
    fi
}

wait_mode() {
    off=$1 limit=$2
    end=$(($(now) + limit))
    while :; do
        # Status first, log second: everything logged before a status change is then printed.
        observe
        n=$(($(wc -c <"$d/log" 2>/dev/null || echo 0)))
        if [ "$n" -gt "$off" ]; then
            tail -c +$((off + 1)) "$d/log" | head -c $((n - off))
            off=$n
        fi
        if [ -z "$s" ] || [ "$s" = waiting ] || settled "$s" || [ "$(now)" -ge "$end" ]; then
            break
        fi
        nap
    done
    printf '\n@nixherd status=%s offset=%s\n' "${s:-missing}" "$off"
}

answer_wait() {
    # After a confirm or abort: wait until the watchdog has acted on it.
    limit=$1
    end=$(($(now) + limit))
    observe
    while ! settled "$s" && [ "$(now)" -lt "$end" ]; do
        nap
        observe
    done
    printf '@nixherd status=%s\n' "${s:-missing}"
}

case $mode in
start) start "$@" ;;
run) run ;;
wait) wait_mode "$@" ;;
confirm)
    [ "$(get status)" = waiting ] && : >"$d/confirmed"
    answer_wait "$1"
    ;;
abort)
    cat >"$d/abort.tmp" && mv -f "$d/abort.tmp" "$d/abort"
    answer_wait "$1"
    ;;
info)
    echo "current=$(current)"
    echo "profile=$(gen_of "$profile")"
    for link in "$profile"-*-link; do
        [ -L "$link" ] || continue
        g=${link#"$profile"-}
        echo "generation=${g%-link} $(readlink -f "$link")"
    done
    ;;
*)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac
