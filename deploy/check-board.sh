#!/usr/bin/env bash
# The agent installed on a board's own OS and CPU without a board: a Debian 12 arm64 root (debootstrap,
# run through qemu-user-static and binfmt_misc), deploy/install-agent.sh run inside it as on a fresh
# board without systemd, the agent started there with the command the installer prints, and
# `host profile` run against it from this machine. Run `check-board.sh --help` for the options.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/.." && pwd)
EXIT_SKIPPED=77

# What the board's root is built from; a cached root built from anything else is rebuilt.
SUITE=bookworm
VARIANT=minbase
# python3-venv brings ensurepip (the installer's venv); ca-certificates lets pip reach the index.
INCLUDE=python3,python3-venv,ca-certificates
PROFILE=rpi5
EXTRAS=agent,tflite
MODEL=example:squeezenet

usage() {
    cat <<'EOF'
Usage: check-board.sh ARCH [OPTIONS]

Checks that the agent installs and serves on a board's own OS and CPU, without the board: ARCH is
arm64 (Debian 12, the base of 64-bit Raspberry Pi OS). On an x86-64 machine the board's programs run
through qemu-user-static, registered with binfmt_misc where it is not yet.

  1. builds a Debian 12 arm64 root with debootstrap (minbase, no systemd, as in a container), or
     reuses the one cached from an earlier run;
  2. runs deploy/install-agent.sh from this checkout inside it (--source, --extras agent,tflite,
     --profile rpi5, --no-start): a fresh install the first time, an upgrade on later runs;
  3. starts the agent inside it with the command the installer printed, on a free loopback port;
  4. runs `host profile example:squeezenet` against it from this machine and checks the result:
     status ok, a complete result document, and a board that says aarch64 and Debian 12.
Under emulation an inference takes seconds and the run is rightly "not valid" (the machine is
busy emulating): the check asserts what is true of it, not its timings.

Options:
  --cache DIR     where the board's root is kept (default: ~/.cache/edgeprof, as
                  DIR/board-arm64/root; $EDGEPROF_BOARD_CACHE overrides the default)
  --mirror URL    Debian mirror for debootstrap (default: the one this machine's apt uses)
  --rebuild       build the root anew instead of reusing the cached one
  --python PATH   interpreter with edgeprof[host] for `host profile` (default: the checkout's
                  .venv/bin/python, else python3)
  --runs N        measured inferences (default: 3)
  -h, --help      show this help

Needs root (debootstrap, chroot, mounts), the Debian packages debootstrap, qemu-user-static and
binfmt-support, and a kernel with binfmt_misc. Mounts (/proc, /dev/shm in the root) live in a
private mount namespace that ends with the check, so the cached root is never left mounted.

Exit status: 0 passed, 1 failed, 2 bad usage, 77 skipped (this machine cannot run the check; the
one reason is printed).
EOF
}

die() {
    echo "check-board.sh: error: $*" >&2
    exit 1
}
skip() {
    echo "check-board.sh: skipped: $*"
    exit "$EXIT_SKIPPED"
}
say() { echo "==> $*"; }
now_s() { date +%s; }

# ---- options ----------------------------------------------------------------------------------
ORIG_ARGS=("$@")
ARCH=
CACHE=${EDGEPROF_BOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgeprof}
MIRROR=
REBUILD=0
HOST_PYTHON=
RUNS=3

need_value() { [[ $# -ge 2 && -n $2 ]] || { echo "check-board.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --cache) need_value "$@"; CACHE=$2; shift 2 ;;
        --mirror) need_value "$@"; MIRROR=$2; shift 2 ;;
        --rebuild) REBUILD=1; shift ;;
        --python) need_value "$@"; HOST_PYTHON=$2; shift 2 ;;
        --runs) need_value "$@"; RUNS=$2; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "check-board.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
        *) [[ -z $ARCH ]] || { echo "check-board.sh: one ARCH only" >&2; exit 2; }; ARCH=$1; shift ;;
    esac
done
[[ $ARCH == arm64 ]] || { echo "check-board.sh: ARCH must be arm64 (got '${ARCH:-nothing}'; see --help)" >&2; exit 2; }
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "check-board.sh: --runs must be a positive whole number" >&2; exit 2; }

# ---- what this machine allows (each missing piece: skip, saying which) ------------------------
[[ $EUID -eq 0 ]] || skip "needs root (debootstrap, chroot and mounts)"
case $(uname -m) in
    aarch64) EMULATED=0 ;;
    x86_64) EMULATED=1 ;;
    *) skip "runs on x86-64 (emulating arm64) or on arm64, not on $(uname -m)" ;;
esac
for tool in debootstrap unshare chroot flock; do
    command -v "$tool" >/dev/null || skip "$tool is not installed (apt-get install debootstrap qemu-user-static binfmt-support)"
done
QEMU_CONF=/usr/lib/binfmt.d/qemu-aarch64.conf
if [[ $EMULATED -eq 1 ]]; then
    command -v qemu-aarch64-static >/dev/null ||
        skip "qemu-user-static is not installed (apt-get install qemu-user-static binfmt-support)"
    grep -qw binfmt_misc /proc/filesystems || skip "this kernel has no binfmt_misc, which runs arm64 programs through qemu"
fi
unshare --mount true 2>/dev/null || skip "cannot make a private mount namespace (unshare --mount): a container without CAP_SYS_ADMIN?"

if [[ -z $HOST_PYTHON ]]; then
    HOST_PYTHON=python3
    [[ -x $REPO/.venv/bin/python ]] && HOST_PYTHON=$REPO/.venv/bin/python
fi
(cd -- "$REPO" && "$HOST_PYTHON" -c 'import host.cli, onnx') 2>/dev/null ||
    die "$HOST_PYTHON cannot import edgeprof's host (pip install -e '.[host]' in this checkout, or give --python)"

if [[ -z $MIRROR ]]; then
    # The first Debian archive in apt's sources (deb822 or one-line form), not the security archive.
    MIRROR=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
        grep -oE '(URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+/debian/?([[:space:]]|$)' |
        grep -oE 'https?://[^[:space:]]+' | head -n 1 || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

# Everything below runs in a private mount namespace: what it mounts is gone when it ends, however it
# ends, and is never visible to the rest of this machine.
if [[ -z ${EDGEPROF_BOARD_NAMESPACE:-} ]]; then
    export EDGEPROF_BOARD_NAMESPACE=1
    exec unshare --mount --propagation private -- "$BASH" "$0" "${ORIG_ARGS[@]}"
fi

# ---- inside the private mount namespace -------------------------------------------------------
started_s=$(now_s)
BOARD_DIR=$CACHE/board-$ARCH
mkdir -p -- "$BOARD_DIR"
BOARD_DIR=$(cd -- "$BOARD_DIR" && pwd -P)
ROOT=$BOARD_DIR/root
STAMP=$BOARD_DIR/root.stamp
WANT_STAMP="debootstrap --arch=$ARCH --variant=$VARIANT --include=$INCLUDE $SUITE"
SRC=/opt/edgeprof-src
# The board's programs see only what is set here, not this machine's pip settings or proxies' absence.
ROOT_ENV=(/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
WORK=$(mktemp -d)
mounted=()
agent_pid=

# Mount points at or below DIR as this namespace sees them (field 5 of mountinfo).
mounts_under() {
    awk -v dir="$1" '$5 == dir || index($5, dir "/") == 1 { print $5 }' /proc/self/mountinfo
}

# A root is deleted only with nothing mounted in it: rm -rf would go into /proc, /sys or /dev.
remove_tree() {
    local left
    left=$(mounts_under "$1")
    [[ -z $left ]] || die "refusing to delete $1: mounted under it: $left"
    rm -rf --one-file-system -- "$1"
}

# Processes whose root directory is the board's root: the agent, its workers, anything the check started there.
root_pids() {
    local link pid
    for link in /proc/[0-9]*/root; do
        [[ $(readlink -- "$link" 2>/dev/null) == "$ROOT" ]] || continue
        pid=${link#/proc/}
        echo "${pid%/root}"
    done
}

stop_board_processes() {
    local pids i
    if [[ -n $agent_pid ]] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -TERM "$agent_pid" 2>/dev/null || true
        for ((i = 0; i < 60; i++)); do
            kill -0 "$agent_pid" 2>/dev/null || break
            sleep 0.5
        done
    fi
    for signal in TERM KILL; do
        mapfile -t pids < <(root_pids)
        [[ ${#pids[@]} -gt 0 ]] || break
        kill "-$signal" "${pids[@]}" 2>/dev/null || true
        for ((i = 0; i < 20; i++)); do
            [[ -n $(root_pids) ]] || break
            sleep 0.5
        done
    done
}

cleanup() {
    local status=$? i
    trap - EXIT
    stop_board_processes
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -- "${mounted[i]}" 2>/dev/null || umount --lazy -- "${mounted[i]}" || true
    done
    # The last run's logs and result stay next to the root, for a look after a failure.
    if [[ -d $BOARD_DIR ]]; then
        rm -rf -- "$BOARD_DIR/last-run"
        mkdir -p -- "$BOARD_DIR/last-run"
        cp -- "$WORK"/*.log "$WORK"/result.json "$BOARD_DIR/last-run/" 2>/dev/null || true
    fi
    rm -rf -- "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mount_in_root() { # TYPE SOURCE PATH-IN-ROOT [OPTIONS]
    local target=$ROOT$3
    mount -t "$1" ${4:+-o "$4"} -- "$2" "$target"
    mounted+=("$target")
}

register_qemu() {
    local dir=/proc/sys/fs/binfmt_misc line
    if [[ ! -e $dir/register ]]; then
        mount -t binfmt_misc binfmt_misc "$dir" 2>/dev/null || skip "cannot mount binfmt_misc on $dir"
    fi
    if [[ ! -e $dir/qemu-aarch64 ]]; then
        [[ -f $QEMU_CONF ]] || skip "$QEMU_CONF is missing: this qemu-user-static cannot be registered here"
        # Recent kernels keep the entry while binfmt_misc is mounted somewhere (here: for this check's
        # namespace), older ones until reboot.
        say "Registering qemu-aarch64 with binfmt_misc ($QEMU_CONF)"
        line=$(grep -v '^#' "$QEMU_CONF" | head -n 1)
        printf '%s\n' "$line" >"$dir/register" 2>/dev/null || skip "binfmt_misc refused the qemu-aarch64 entry"
    fi
    [[ $(head -n 1 "$dir/qemu-aarch64") == enabled ]] ||
        skip "qemu-aarch64 is registered with binfmt_misc but disabled (echo 1 > $dir/qemu-aarch64)"
}

# One root at a time per cache: a second check waits for the first.
exec 9>"$BOARD_DIR/lock"
flock 9
[[ $EMULATED -eq 0 ]] || register_qemu

# ---- 1. the board's root ----------------------------------------------------------------------
phase_s=$(now_s)
if [[ $REBUILD -eq 0 && -f $STAMP && $(cat -- "$STAMP") == "$WANT_STAMP" && -x $ROOT/usr/bin/python3 ]]; then
    root_how=reused
    say "Reusing the Debian 12 $ARCH root in $ROOT"
else
    root_how=built
    remove_tree "$ROOT"
    remove_tree "$ROOT.partial"
    rm -f -- "$STAMP"
    say "Building a Debian 12 $ARCH root in $ROOT with debootstrap from $MIRROR (minutes)"
    if ! debootstrap --arch="$ARCH" --variant="$VARIANT" --include="$INCLUDE" "$SUITE" "$ROOT.partial" "$MIRROR" \
        >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log" "$ROOT.partial/debootstrap/debootstrap.log" >&2 2>/dev/null || true
        die "debootstrap failed (log: $BOARD_DIR/last-run/debootstrap.log)"
    fi
    # debootstrap unmounts what it mounted; if it did not, those mounts are in this namespace only.
    while read -r left; do umount --lazy -- "$left"; done < <(mounts_under "$ROOT.partial" | sort -r)
    [[ -z $(mounts_under "$ROOT.partial") ]] || die "$ROOT.partial is still mounted after debootstrap"
    mv -- "$ROOT.partial" "$ROOT"
    printf '%s\n' "$WANT_STAMP" >"$STAMP"
fi
machine=$(chroot "$ROOT" /usr/bin/uname -m 2>&1) || die "the $ARCH root's programs do not run here: $machine"
[[ $machine == aarch64 ]] || die "programs in the $ARCH root report machine '$machine', not aarch64"
root_s=$(($(now_s) - phase_s))
say "Root ready in $root_s s ($root_how); its programs run as $machine"

# ---- 2. install the agent as on a board without systemd ---------------------------------------
phase_s=$(now_s)
# /proc for the agent (psutil, its workers' memory); /dev/shm for multiprocessing. Not /sys: this
# machine's /sys describes its x86 CPUs, and ONNX Runtime's CPU detection (cpuinfo) reading it under
# emulation crashes the import with SIGSEGV; without it cpuinfo says it failed and ONNX Runtime goes on.
# The board has no sensors then, which is the truth: this machine's thermal zones are not the board's.
mount_in_root proc proc /proc
mount_in_root tmpfs tmpfs /dev/shm mode=1777
# pip inside the root reaches the index through this machine's network: its resolver settings, and the
# certificates it trusts (a proxy that inspects TLS has its own CA there), for this check only.
bind_file_in_root() { # HOST-FILE PATH-IN-ROOT
    local target=$ROOT$2
    if [[ -L $target || ! -f $target ]]; then
        rm -f -- "$target"
        : >"$target"
    fi
    mount --bind -- "$1" "$target"
    mounted+=("$target")
}
bind_file_in_root /etc/resolv.conf /etc/resolv.conf
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
[[ ! -f $CA_BUNDLE ]] || bind_file_in_root "$CA_BUNDLE" "$CA_BUNDLE"

say "Copying this checkout to $SRC in the root"
remove_tree "$ROOT$SRC"
mkdir -p -- "$ROOT$SRC"
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    # Tracked and new files, as a clone with these changes would have them; no venvs or build output.
    (cd -- "$REPO" && git -c safe.directory="$REPO" ls-files -z --cached --others --exclude-standard |
        tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$ROOT$SRC"
else
    tar -C "$REPO" --exclude=.venv --exclude=build --exclude='*.egg-info' -cf - . | tar -xf - -C "$ROOT$SRC"
fi

# The agent must not announce itself over mDNS to the rest of this machine (a `host fleet discover`
# elsewhere would find it): an argument added by hand to agent.env, which the installer keeps.
if [[ ! -f $ROOT/etc/edgeprof/agent.env ]]; then
    install -d -m 0750 -- "$ROOT/etc/edgeprof"
    printf 'EDGEPROF_AGENT_ARGS=--no-advertise\n' >"$ROOT/etc/edgeprof/agent.env"
fi

if [[ -x $ROOT/opt/edgeprof/venv/bin/agent ]]; then install_how=upgrade; else install_how=fresh; fi
port=$("$HOST_PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
installer=(bash "$SRC/deploy/install-agent.sh" --source "$SRC" --extras "$EXTRAS" --no-start
    --profile "$PROFILE" --listen "127.0.0.1:$port" --tags board-check)
say "In the root ($install_how): ${installer[*]}"
set +e
chroot "$ROOT" "${ROOT_ENV[@]}" PIP_CERT="$CA_BUNDLE" "${installer[@]}" 2>&1 | tee "$WORK/install.log" |
    grep --line-buffered -E '^(==>|Agent address|Without systemd|install-agent.sh: error)' | sed -u 's/^/    /'
install_status=${PIPESTATUS[0]}
set -e
if [[ $install_status -ne 0 ]]; then
    tail -n 30 "$WORK/install.log" >&2
    die "install-agent.sh exited $install_status in the $ARCH root (log: $BOARD_DIR/last-run/install.log)"
fi
hand=$(sed -n 's/^Without systemd (container, chroot), start the agent by hand with: //p' "$WORK/install.log")
[[ -n $hand ]] || die "install-agent.sh did not say how to start the agent without systemd"
token_owner=$(chroot "$ROOT" stat -c '%U:%G %a' /etc/edgeprof/agent.token)
install_s=$(($(now_s) - phase_s))
say "Installed in $install_s s ($install_how)"

# ---- 3. start the agent with the command the installer printed ---------------------------------
phase_s=$(now_s)
say "Starting the agent in the root: $hand"
chroot "$ROOT" "${ROOT_ENV[@]}" PYTHONUNBUFFERED=1 bash -c "exec $hand" >"$WORK/agent.log" 2>&1 &
agent_pid=$!
deadline=$(($(now_s) + 300))
until grep -q 'edgeprof agent listening on' "$WORK/agent.log"; do
    if ! kill -0 "$agent_pid" 2>/dev/null; then
        tail -n 20 "$WORK/agent.log" >&2
        die "the agent exited before listening"
    fi
    (($(now_s) < deadline)) || { tail -n 20 "$WORK/agent.log" >&2; die "the agent did not listen within 300 s"; }
    sleep 1
done
if grep -q "accessible by other users" "$WORK/agent.log"; then
    grep "accessible by other users" "$WORK/agent.log" >&2
    die "the agent warns about the token file the installer wrote ($token_owner)"
fi
say "Agent listening on 127.0.0.1:$port, token file $token_owner, no warning about it"
start_s=$(($(now_s) - phase_s))

# ---- 4. profile a model on it from this machine -----------------------------------------------
phase_s=$(now_s)
install -m 0600 -- "$ROOT/etc/edgeprof/agent.token" "$WORK/token"
mkdir -p -- "$WORK/host"
profile=("$HOST_PYTHON" -m host profile "$MODEL" --device "127.0.0.1:$port" --token-file "$WORK/token"
    --runs "$RUNS" --warmup 1 --min-duration 0 --idle 1 --settle-timeout 10 --timeout 600 --json "$WORK/result.json")
say "On this machine: host profile $MODEL --device 127.0.0.1:$port --runs $RUNS ..."
set +e
# A host of its own: no store, cache, config or token of this machine's user is read or written.
(cd -- "$WORK/host" && env -u EDGEPROF_TOKEN -u EDGEPROF_CONFIG -u EDGEPROF_DB PYTHONPATH="$REPO" \
    XDG_CONFIG_HOME="$WORK/host/config" XDG_CACHE_HOME="$WORK/host/cache" XDG_DATA_HOME="$WORK/host/data" \
    timeout --foreground 900 "${profile[@]}") >"$WORK/host.log" 2>&1
profile_status=$?
set -e
sed 's/^/    /' "$WORK/host.log"
[[ $profile_status -eq 0 ]] || die "host profile exited $profile_status (agent log: $BOARD_DIR/last-run/agent.log)"
"$HOST_PYTHON" "$SCRIPT_DIR/check_board_result.py" "$WORK/result.json" --machine aarch64 \
    --os "Debian GNU/Linux 12" --profile "$PROFILE" --runs "$RUNS" --runtimes onnxruntime,tflite
profile_s=$(($(now_s) - phase_s))

echo "check-board.sh: passed in $(($(now_s) - started_s)) s: root ${root_s} s ($root_how), install ${install_s} s" \
    "($install_how), agent start ${start_s} s, profile ${profile_s} s"
