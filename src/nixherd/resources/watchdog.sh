# nixherd activation watchdog: POSIX sh, run on a target node, driven by nixherd over ssh.
#
#   sh watchdog.sh ID start GOAL TOPLEVEL PROFILE ROLLBACK CONFIRM_SECS TIMEOUT_SECS BY SLICE
#                                            (then streams like `wait 0 SLICE`)
#   sh watchdog.sh ID run                    (detached; started by `start`)
#   sh watchdog.sh ID wait OFFSET MAX_SECS [UNTIL_SETTLED]
#                                            (streams the log from OFFSET, `none`: no log, until
#                                            the status settles or, unless UNTIL_SETTLED is 1,
#                                            reaches waiting)
#   sh watchdog.sh ID confirm MAX_SECS [OFFSET]  (over a fresh ssh connection; streams the log
#                                            from OFFSET while the confirmation is acted on)
#   sh watchdog.sh ID abort MAX_SECS         (reason on stdin: a health check failed, or the
#                                            deployer's second Ctrl-C: a switch still running is
#                                            stopped first, as on a timeout, then rolled back)
#   sh -s -- - info                          (what the node runs and its generations)
#
# State lives in /run/nixherd/act-ID (tmpfs: a reboot forgets it). /run and /run/nixherd must be
# real directories that only root can write (the command that writes this script there checks
# that first, node/watchdog.py's _BOOT, and refuses otherwise): nothing written here as root
# may go through a path another user controls. The per-node lock is the symlink
# /run/nixherd/lock whose text is "ID PID SINCE BY": creating a symlink is atomic and carries its
# owner with it. The watchdog holds the lock until the activation is settled (confirmed, rolled
# back, or finished; it lets go just before it says so), so a second deploy fails at once; the
# deployer's probe reads it too, and never calls a node with an activation in flight up to date.
#
# An unconfirmed system never becomes what the node boots. With magic rollback, a switch runs
# in two steps: `switch-to-configuration test` first (the new system runs; the system profile
# and the boot loader's default stay on the previous generation), and only once the deployer
# confirms, the profile is set and `switch-to-configuration boot` makes it the boot default. A
# reboot at any moment before the confirmation therefore boots the previous system, with
# nothing installed on the node to roll back at boot (the other way, keeping the old order and
# undoing it early at boot, needs a boot-time unit on every target). A timeout or an abort
# re-activates the previous system with `test`: its profile and boot entry never moved. (If
# setting them fails after the confirmation, both are put back and the previous system is
# switched to.) Without rollback (or for `boot`) the order is NixOS's: profile, then the action.
#
# Every status the followers see carries the boot identity (`bootmark`: the kernel's boot id
# and the start time of pid 1, which also changes when a container or a lab host reboots on a
# shared kernel), so a deployer notices a reboot the moment the node answers again.
#
# Status words: the file `status`, and the line that ends every start, wait, confirm and abort,
# `@nixherd status=WORD[ REASON] offset=N|none boot=BOOTMARK`. A settled status is final (the
# lock is let go first). The deployer reads them with node/protocol.py, whose `Status` holds
# these rows word for word (a unit test compares the two; `settled` below agrees too):
#
#   starting                 running  the lock is taken; the detached watchdog is launched
#   activating               running  switch-to-configuration runs
#   waiting                  running  the new system runs; the deployer's confirmation is awaited
#   confirming               running  confirmed; the profile and the boot entry are set
#   rolling-back REASON      running  the previous system is being restored
#   done                     settled  activated; no confirmation was asked for
#   confirmed                settled  confirmed; the new system runs and is the one that boots
#   failed REASON            settled  failed where there was nothing to roll back
#   rolled-back REASON       settled  the previous system runs again
#   rollback-failed REASON   settled  the node may run neither system
#   lost STATUS              settled  the watchdog died at STATUS (said to followers only)
#   missing                  settled  no state for this activation (said to followers only)
#   rebooted                 settled  a status from another boot (the deployer's word only)
#
# Nothing polls. Every step blocks on something that wakes it: `wait` on a child, or a read
# from one of two FIFOs in the state dir. `ctl` carries words to the watchdog (confirm, abort,
# and timeout from its own timer); `ev` carries a byte to whoever follows the activation each
# time the status changes, plus a tick a second from the follower's own timer so that a
# watchdog that died is noticed. Both are opened read-write (never blocks on Linux), and the
# few bytes that nobody reads stay in the pipe buffer until the last holder closes it. Polling
# every 0.2 s instead ran more processes than the rest of a deploy together (4,000 against 1,040
# for 20 nodes), on the targets' CPU. (Only a timed-out switch is waited for in short steps,
# while it is being killed.)

set -u
# Byte offsets into the log are counted with ${#line}: bytes only in the C locale.
LC_ALL=C
export LC_ALL
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

# Values written once, before anyone reads them: a single write each.
put() { printf '%s\n' "$2" >"$d/$1"; }
# get VAR NAME: VAR is the file's first line, empty when there is none.
get() { { IFS= read -r "$1" <"$d/$2"; } 2>/dev/null || eval "$1="; }
say() { printf 'nixherd: %s\n' "$*"; }

# The status is read while it changes: replaced atomically, then the followers are woken.
set_status() {
    printf '%s\n' "$1" >"$d/status.tmp" && mv -f "$d/status.tmp" "$d/status"
    printf 'n\n' >&4
}

# later SECS CMD...: run CMD after SECS seconds in the background; cancel with `kill "$tpid"`.
# The sleep is killed along with it, so nothing lingers on the node.
later() {
    secs=$1
    shift
    (
        exec 4>&-
        trap 'kill "$s" 2>/dev/null; exit 0' TERM
        sleep "$secs" &
        s=$!
        wait "$s" && "$@"
    ) </dev/null >/dev/null 2>&1 &
    tpid=$!
}

# A tick on `ev` every second, until `kill "$tick"` or the end of this shell ($$ in a subshell
# is its parent's pid): a follower cut off from the deployer dies of SIGPIPE without a trap.
ticker() {
    (
        exec 5>&-
        trap 'kill "$s" 2>/dev/null; exit 0' TERM
        while kill -0 $$ 2>/dev/null; do
            sleep 1 &
            s=$!
            wait "$s" || exit 0
            printf 't\n' >&4 || exit 0
        done
    ) </dev/null >/dev/null 2>&1 &
    tick=$!
}

current() {
    if [ -e /run/current-system ]; then readlink -f /run/current-system; fi
}

# Sets `boot` to this boot's identity: the kernel's boot id, "/", and pid 1's start time (field
# 22 of /proc/1/stat, counted after the parenthesised command name). The same text as
# probe.BOOTMARK_SH and probe.boot_marker (a unit test holds the three together).
bootmark() {
    { IFS= read -r bm_id </proc/sys/kernel/random/boot_id; } 2>/dev/null || bm_id=
    { IFS= read -r bm_stat </proc/1/stat; } 2>/dev/null || bm_stat=
    set -f
    set -- ${bm_stat##*") "}
    set +f
    if [ $# -ge 20 ]; then shift 19; else set -- ""; fi
    boot="$bm_id/$1"
}

# gen_of VAR LINK: system-12-link -> 12, empty when LINK is none of those.
gen_of() {
    g=$(readlink "$2" 2>/dev/null) || g=
    g=${g#system-}
    g=${g%-link}
    case $g in '' | *[!0-9]*) g= ;; esac
    eval "$1=\$g"
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

# The last word: the lock goes first, so whoever hears the settled status can deploy at once.
finish() {
    release_lock
    set_status "$1"
    exit 0
}

# Run switch-to-configuration in its own session, bounded by a timeout. Sets rc (124 on timeout).
# With ABORTABLE 1 (the activation's own switch, never a rollback's), an abort stops it.
stc() {
    top=$1 action=$2 limit=$3 abortable=${4:-0}
    if [ ! -x "$top/bin/switch-to-configuration" ]; then
        say "$top/bin/switch-to-configuration: not found"
        rc=127
        return
    fi
    [ -e "$d/timedout" ] && rm -f "$d/timedout"
    # A background child of a shell without job control is no process group leader, so setsid
    # runs in it without forking: $! is the new session, and `wait` gets its exit code. Under
    # systemd the switch also gets a scope unit of its own (systemd-run --scope execs the
    # command in place): what it starts outside its session is still found there on a timeout.
    # The FIFOs stay here: a service started by the switch must not hold them open.
    scope=
    if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
        nscope=$((${nscope:-0} + 1))
        scope=nixherd-switch-$id-$nscope
        (exec systemd-run --scope --collect --quiet --unit="$scope" \
            --description="nixherd switch-to-configuration $action ($id)" -- \
            setsid -w "$top/bin/switch-to-configuration" "$action" 4>&- 5>&-) &
    else
        (exec setsid -w "$top/bin/switch-to-configuration" "$action" 4>&- 5>&-) &
    fi
    pid=$!
    later "$limit" expire "$pid" "$action" "$limit" "$scope"
    if [ "$abortable" = 1 ]; then
        # An abort may come while the switch runs (`abort` mode, another process). Each side
        # writes its file before it looks for the other's (`abort` then `switch` there, `switch`
        # then `abort` here), so whichever comes second sees the first: none is missed.
        put switch "$pid $scope"
        [ -e "$d/abort" ] && abort_switch
    fi
    wait "$pid"
    rc=$?
    if [ -e "$d/timedout" ]; then
        # The switch's session leader is gone, maybe not the rest: `expire` ends every process
        # of the switch before anything else runs (a rollback into a half-killed switch).
        rc=124
        wait "$tpid"
    else
        kill "$tpid" 2>/dev/null
        # Aborted: the same rule. The abort's own stop may still be under way (its TERM ended
        # the leader, not a helper that ignores it): none of the switch is left after this.
        if [ "$abortable" = 1 ] && [ -e "$d/abort" ]; then
            stop_switch TERM 20 "$pid" "$scope"
            stop_switch KILL 50 "$pid" "$scope"
        fi
    fi
    return 0
}

# expire PID ACTION SECS SCOPE: the switch ran out of time. TERM to its whole session (and its
# scope), up to 2 s to end, then KILL, and back only when none of it is left.
expire() {
    : >"$d/timedout"
    say "switch-to-configuration $2 did not finish within ${3}s: stopping it" >>"$d/log"
    stop_switch TERM 20 "$1" "$4"
    stop_switch KILL 50 "$1" "$4"
}

# The deployer aborts while the activation's switch runs: stop it as a timeout does (the
# rollback that follows must not run into a half-killed switch).
abort_switch() {
    get sw switch
    [ -n "$sw" ] || return 0
    set -- $sw
    say "aborted by the deployer: stopping switch-to-configuration" >>"$d/log"
    stop_switch TERM 20 "$1" "${2:-}"
    stop_switch KILL 50 "$1" "${2:-}"
}

# stop_switch SIGNAL TENTHS PID SCOPE: SIGNAL to the switch's session (and its scope), then wait
# up to TENTHS tenths of a second for none of it to be left.
stop_switch() {
    signal_switch "$1" "$3" "$4"
    n=0
    while switch_alive "$3" "$4" && [ "$n" -lt "$2" ]; do
        sleep 0.1
        n=$((n + 1))
    done
}

signal_switch() {
    kill "-$1" "-$2" 2>/dev/null
    [ -z "$3" ] || systemctl kill --signal="$1" "$3.scope" >/dev/null 2>&1
}

switch_alive() {
    if [ -n "$2" ] && systemctl is-active --quiet "$2.scope" 2>/dev/null; then
        return 0
    fi
    kill -0 "-$1" 2>/dev/null
}

# True while systemd shuts the node down (or reboots it).
shutting_down() {
    [ -d /run/systemd/system ] || return 1
    [ "$(systemctl is-system-running 2>/dev/null)" = stopping ]
}

rollback() {
    reason=$1
    set_status "rolling-back $reason"
    say "rolling back ($reason)"
    good=1
    get prev previous
    get prevgen prevgen
    get newgen newgen
    get pmode profile
    get profiled profiled
    # The profile (and with it the boot entry) moved only if this activation moved it: before
    # its confirmation a switch with rollback leaves both alone.
    case $profiled in
    1)
        if [ -n "$prevgen" ]; then
            nix-env -p "$profile" --switch-generation "$prevgen" || good=0
            if [ "$pmode" = set ] && [ -n "$newgen" ] && [ "$newgen" != "$prevgen" ]; then
                nix-env -p "$profile" --delete-generations "$newgen" || true
            fi
        elif [ -n "$newgen" ]; then
            # First generation ever: nothing to go back to, so the profile goes away.
            rm -f "$profile" "$profile-$newgen-link"
        fi
        ;;
    esac
    if [ -n "$prev" ] && shutting_down; then
        # systemd is stopping every unit (this one among them): a re-activation now would race
        # the shutdown, and its starts are refused. What boots next is what counts: unconfirmed,
        # the boot entry never moved; moved, it goes back first.
        say "the node is shutting down: $prev is what boots next"
        if [ "$profiled" = 1 ]; then
            get tsecs timeout
            stc "$prev" boot "$tsecs"
            [ "$rc" = 0 ] || { say "restoring the boot entry of $prev failed (exit $rc)"; good=0; }
        fi
    elif [ -n "$prev" ]; then
        get goal goal
        action=test
        [ "$profiled" = 1 ] && [ "$goal" = switch ] && action=switch
        get tsecs timeout
        stc "$prev" "$action" "$tsecs"
        [ "$rc" = 0 ] || { say "re-activating $prev failed (exit $rc)"; good=0; }
    else
        say "no previous system to go back to"
        good=0
    fi
    if [ "$good" = 1 ]; then
        say "rolled back to ${prev:-nothing}"
        finish "rolled-back $reason"
    fi
    finish "rollback-failed $reason"
}

start() {
    goal=$1 top=$2 pmode=$3 rb=$4 csecs=$5 tsecs=$6 by=$7 slice=${8:-120}
    since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    if ! take_lock "$id $$ $since $by"; then
        set -- $(readlink "$lock" 2>/dev/null)
        echo "locked since=${3:-?} pid=${2:-?} by=${4:-?}"
        rm -rf "$d"
        exit 75
    fi
    # Old activations' state: keep the last few for inspection (trimmed now and then).
    set -- "$base"/act-*
    if [ $# -gt 20 ]; then
        ls -1dt "$base"/act-* 2>/dev/null | tail -n +11 | while read -r old; do rm -rf "$old"; done
    fi
    mkfifo "$d/ctl" "$d/ev" || {
        release_lock
        echo "mkfifo failed"
        exit 1
    }
    exec 4<>"$d/ev"
    put goal "$goal"
    put toplevel "$top"
    put profile "$pmode"
    put rollback "$rb"
    put window "$csecs"
    put timeout "$tsecs"
    put previous "$(current)"
    gen_of prevgen "$profile"
    put prevgen "$prevgen"
    put newgen ""
    : >"$d/log"
    set_status starting
    # Detached, so that an ssh drop or a network restart cannot kill a half-done switch.
    if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1; then
        # One transient service per activation (ID is random), collected once it ends, failed
        # or not. Without --wait, systemd-run needs no D-Bus: as root it talks to systemd over
        # its private socket and returns once the watchdog runs (exec: it did start). A
        # transient unit gets systemd's environment, not this login's, so what the watchdog
        # relies on is handed over explicitly: the PATH set above (the same in both branches),
        # the C locale, and NixOS's switch variables when the login has them. Its output goes
        # to the log the setsid branch writes, stdin is /dev/null.
        set -- --unit="nixherd-activate-$id" --description="nixherd activation $id" \
            --collect --quiet --service-type=exec \
            -p StandardInput=null -p StandardOutput="append:$d/log" \
            -p StandardError="append:$d/log" \
            --setenv=PATH="$PATH" --setenv=LC_ALL=C
        [ -z "${LOCALE_ARCHIVE+x}" ] || set -- "$@" --setenv=LOCALE_ARCHIVE="$LOCALE_ARCHIVE"
        [ -z "${NIXOS_INSTALL_BOOTLOADER+x}" ] ||
            set -- "$@" --setenv=NIXOS_INSTALL_BOOTLOADER="$NIXOS_INSTALL_BOOTLOADER"
        [ -z "${NIXOS_NO_CHECK+x}" ] || set -- "$@" --setenv=NIXOS_NO_CHECK="$NIXOS_NO_CHECK"
        # An absolute shell: systemd looks a bare name up in its own PATH, not the one above.
        systemd-run "$@" -- "$(command -v sh)" "$d/watchdog.sh" "$id" run >>"$d/log" 2>&1 || {
            release_lock
            echo "systemd-run failed: $(tail -n 3 "$d/log")"
            exit 1
        }
    else
        setsid sh "$d/watchdog.sh" "$id" run </dev/null >>"$d/log" 2>&1 4>&- &
    fi
    # Keep the lock until the watchdog has taken it over (it says so on `ev`).
    tick=
    ticks=0
    while get s status && [ "$s" = starting ]; do
        if [ "$ticks" -ge 20 ]; then
            kill "$tick" 2>/dev/null
            release_lock
            echo "the watchdog did not start"
            exit 1
        fi
        [ -n "$tick" ] || ticker
        read -r word <&4
        [ "$word" = t ] && ticks=$((ticks + 1))
    done
    get prev previous
    bootmark
    echo "boot=$boot"
    echo "previous=$prev"
    echo "prevgen=$prevgen"
    # The watchdog was just seen taking the lock: no need to check that it lives. The ticker,
    # if one was started, goes on serving `follow`.
    follow 0 "$slice" 0 0
}

run() {
    exec </dev/null >>"$d/log" 2>&1
    exec 4<>"$d/ev" 5<>"$d/ctl"
    trap '' HUP INT PIPE
    set -- $(readlink "$lock")
    retake_lock "$id $$ ${3:-?} ${4:-?}"
    put pid "$$"
    set_status activating
    get goal goal
    get top toplevel
    get pmode profile
    get tsecs timeout
    get rb rollback
    # With rollback, a switch is only tried out (`test`) until it is confirmed; the profile and
    # the boot entry follow the confirmation (see the header).
    if [ "$rb" = 1 ] && [ "$goal" = switch ]; then
        action=test
        defer=1
    else
        action=$goal
        defer=0
        set_profile || finish "failed profile"
    fi
    say "switch-to-configuration $action"
    stc "$top" "$action" "$tsecs" 1
    rm -f "$d/switch"
    if [ "$rb" != 1 ]; then
        [ "$rc" = 0 ] && finish done
        [ -e "$d/abort" ] && finish "failed aborted"
        finish "failed activation-exit-$rc"
    fi
    # Aborted while switching (or just before): back to the previous system.
    [ -e "$d/abort" ] && rollback aborted
    [ "$rc" = 0 ] || rollback "activation-exit-$rc"
    get window window
    later "$window" tell timeout
    timer=$tpid
    set_status waiting
    while :; do
        IFS= read -r word <&5 || word=
        case $word in
        confirm)
            kill "$timer" 2>/dev/null
            [ "$defer" = 0 ] || make_default
            say "confirmed"
            finish confirmed
            ;;
        abort)
            kill "$timer" 2>/dev/null
            rollback "aborted"
            ;;
        timeout)
            rollback "timeout"
            ;;
        esac
    done
}

# Point the system profile at the new system (or the generation asked for).
set_profile() {
    case $pmode in
    set)
        say "setting the system profile to $top"
        nix-env -p "$profile" --set "$top" || return 1
        put profiled 1
        gen_of newgen "$profile"
        put newgen "$newgen"
        ;;
    gen:*)
        say "switching the system profile to generation ${pmode#gen:}"
        nix-env -p "$profile" --switch-generation "${pmode#gen:}" || return 1
        put profiled 1
        ;;
    esac
    return 0
}

# Confirmed: the running system becomes the one that boots. A failure here rolls back, so the
# node never runs one system while it would boot another.
make_default() {
    set_status confirming
    set_profile || rollback "profile"
    say "switch-to-configuration boot"
    stc "$top" boot "$tsecs"
    [ "$rc" = 0 ] || rollback "boot-exit-$rc"
}

settled() {
    case $1 in
    starting | activating | waiting | confirming | rolling-back*) return 1 ;;
    esac
    return 0
}

# The status as the deployer should see it (in s): "lost" when the watchdog died unsettled.
# With CHECK=0 (just woken by the watchdog itself) its liveness is not looked at.
observe() {
    get s status
    [ -e "$d" ] || s=
    if [ -n "$s" ] && ! settled "$s" && [ "${1:-1}" = 1 ]; then
        # Until the detached watchdog has written its pid, `start` (the lock holder) stands in.
        get wpid pid
        if [ -n "$wpid" ]; then
            owner_alive "$id $wpid" || s="lost $s"
        else
            held=$(readlink "$lock" 2>/dev/null) || held=
            case $held in
            "$id "*) owner_alive "$held" || s="lost $s" ;;
            *) s="lost $s" ;;
            esac
        fi
        # The watchdog may have settled (and exited) between the two reads above.
        case $s in
        lost*)
            get s2 status
            settled "$s2" && s=$s2
            ;;
        esac
    fi
}

# Read the log from fd 6 and print its new complete lines, then "@nixherd offset=POS": pos counts
# the bytes printed, so an offset is always at a line's end, and a deployer cut off mid-stream
# knows where to resume. A line still being written waits in `carry`.
stream() {
    was=$pos
    while IFS= read -r line <&6; do
        line=$carry$line
        carry=
        printf '%s\n' "$line"
        pos=$((pos + ${#line} + 1))
    done
    carry=$carry$line
    [ "$pos" = "$was" ] || printf '@nixherd offset=%s\n' "$pos"
}

# follow OFFSET MAX_SECS UNTIL_SETTLED [CHECK]: stream the log from OFFSET (none: no log) until
# the status settles (or, unless UNTIL_SETTLED, reaches waiting), then print the status marker.
# MAX_SECS is counted in ticks of the follower's timer (started here unless `tick` runs).
follow() {
    off=$1 limit=$2 until=$3 check=${4:-1}
    [ -p "$d/ev" ] && exec 4<>"$d/ev"
    ticks=0
    tick=${tick:-}
    pos=0
    carry=
    if [ "$off" != none ] && [ -f "$d/log" ]; then
        exec 6<"$d/log"
        # Skip what the deployer has already seen (whole lines: offsets end lines).
        while [ "$pos" -lt "$off" ] && IFS= read -r line <&6; do
            pos=$((pos + ${#line} + 1))
        done
    else
        off=none
    fi
    while :; do
        # Status first, log second: everything logged before a status change is then printed.
        observe "$check"
        [ "$off" = none ] || stream
        if [ -z "$s" ] || settled "$s" || [ "$ticks" -ge "$limit" ]; then
            break
        fi
        [ "$s" = waiting ] && [ "$until" = 0 ] && break
        if [ ! -p "$d/ev" ]; then
            sleep 1
            ticks=$((ticks + 1))
            continue
        fi
        [ -n "$tick" ] || ticker
        read -r word <&4 || word=t
        case $word in
        n) check=0 ;;
        *)
            check=1
            ticks=$((ticks + 1))
            ;;
        esac
    done
    [ -n "$tick" ] && kill "$tick" 2>/dev/null
    [ "$off" = none ] || off=$pos
    bootmark
    printf '\n@nixherd status=%s offset=%s boot=%s\n' "${s:-missing}" "$off" "$boot"
}

# After a confirm or abort: wait until the watchdog has acted on it (streaming the log from
# OFFSET if one is given: a confirmation sets the profile and the boot entry).
answer() {
    follow "${2:-none}" "$1" 1
}

tell() {
    [ -p "$d/ctl" ] && exec 5<>"$d/ctl" && printf '%s\n' "$1" >&5
}

case $mode in
start) start "$@" ;;
run) run ;;
wait) follow "$1" "$2" "${3:-0}" ;;
confirm)
    get s status
    [ "$s" = waiting ] && tell confirm
    answer "$1" "${2:-none}"
    ;;
abort)
    cat >"$d/abort"
    # A switch still running (the activation's own, see stc) is stopped; once waiting, the
    # watchdog reads the word from `ctl`.
    abort_switch
    tell abort
    answer "$1"
    ;;
info)
    current=$(current)
    echo "current=$current"
    gen_of g "$profile"
    echo "profile=$g"
    bootmark
    echo "boot=$boot"
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
