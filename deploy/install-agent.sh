#!/usr/bin/env bash
# Installs the edgeprof agent on a board as a systemd service: a dedicated user, a venv, a bearer
# token, the unit file. Safe to run again (upgrades the package, keeps the token and settings).
# Run `install-agent.sh --help` for the options; deploy/README.md explains the result.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
SERVICE=edgeprof-agent
SERVICE_USER=edgeprof
# Groups that grant sensor or accelerator access on the boards we support; only those that exist
# on this system are used. i2c/gpio: Raspberry Pi OS; video: Jetson GPU nodes (/dev/nvhost-*,
# /dev/nvmap) and Pi camera/VideoCore; render: /dev/dri/renderD*; dialout: USB and Bluetooth
# serial power meters (/dev/ttyACM*, /dev/ttyUSB*, /dev/rfcomm*).
SENSOR_GROUPS=(i2c gpio video render dialout)

# Paths on the target system; with --root they are created under that directory instead.
VENV=/opt/edgeprof/venv
ETC_DIR=/etc/edgeprof
TOKEN_FILE=/etc/edgeprof/agent.token
ENV_FILE=/etc/edgeprof/agent.env
DATA_DIR=/var/lib/edgeprof
UNIT_FILE=/etc/systemd/system/edgeprof-agent.service
DROPIN_DIR=/etc/systemd/system/edgeprof-agent.service.d
GROUPS_DROPIN=/etc/systemd/system/edgeprof-agent.service.d/10-groups.conf
WANTS_LINK=/etc/systemd/system/multi-user.target.wants/edgeprof-agent.service
RAPL_RULE=/etc/udev/rules.d/99-edgeprof-rapl.rules

usage() {
    cat <<'EOF'
Usage: install-agent.sh [OPTIONS]

Installs the edgeprof agent as the systemd service edgeprof-agent: creates the system user
`edgeprof`, a venv with `edgeprof[agent]`, a random bearer token in /etc/edgeprof/agent.token,
settings in /etc/edgeprof/agent.env, the data directory /var/lib/edgeprof and the unit file,
then enables and starts the service. Running it again upgrades the package and keeps the token
and any settings not given on the command line. Needs root unless --root points elsewhere.

Where systemd is not running (a container, a chroot, an image being built) it installs everything,
enables the unit for the next boot with systemd (the link `systemctl enable` makes; systemctl need
not be installed), starts nothing, exits 0, and prints the exact command that starts the agent by
hand as the service user, e.g.:
  setpriv --reuid=edgeprof --regid=edgeprof --init-groups --reset-env -- \
      /opt/edgeprof/venv/bin/agent serve --listen 0.0.0.0:50051 \
      --token-file /etc/edgeprof/agent.token --data-dir /var/lib/edgeprof --profile rpi5

Where to install from:
  --source PATH|SPEC     a source tree, a wheel, or a pip requirement (default: edgeprof from
                         the package index)
  --extras LIST          extras to install, comma-separated (default: agent; e.g. agent,tflite)
  --onnxruntime SPEC     replace the onnxruntime wheel from PyPI after installing, e.g. with an
                         NVIDIA Jetson GPU build: a wheel path, or pip arguments such as
                         "onnxruntime-gpu --extra-index-url https://pypi.jetson-ai-lab.io/jp6/cu126"
  --python PATH          interpreter for the venv, 3.10 or newer (default: python3)
  --venv DIR             where the venv goes (default: /opt/edgeprof/venv)
  --pip-args "ARGS"      extra arguments for every pip install, e.g. "--no-index --find-links DIR"
  --skip-pip             create the venv but install nothing into it (offline tests)

Agent settings (written to /etc/edgeprof/agent.env; omitted ones keep their previous value):
  --listen HOST:PORT     address to serve on (default: 0.0.0.0:50051; always with the token)
  --profile NAME         device profile, e.g. jetson-orin-nano, rpi5
  --tags LIST            comma-separated tags for discovery, e.g. lab,jetson
  --power-meter SPEC     external power meter, e.g. um25c:/dev/rfcomm0 or csv:/dev/ttyACM0@115200

System integration:
  --rapl-access          install a udev rule that lets the edgeprof group read RAPL energy_uj
  --no-start             enable the service but do not start or restart it now
  --root DIR, --prefix DIR
                         install under DIR instead of / (image building, tests): every absolute
                         path is prefixed with DIR, and useradd, chown, usermod, udevadm and
                         systemctl are printed instead of run
  --uninstall            stop and disable the service, remove the unit, venv, token and settings;
                         keeps /var/lib/edgeprof and the edgeprof user
  --purge                with --uninstall: also remove /var/lib/edgeprof and the edgeprof user
  -h, --help             show this help
EOF
}

die() {
    echo "install-agent.sh: error: $*" >&2
    exit 1
}
say() { echo "==> $*"; }

# ---- options ----------------------------------------------------------------------------------
ROOT=/
SOURCE=edgeprof
EXTRAS=agent
ORT_SPEC=
PYTHON=python3
PIP_ARGS=
SKIP_PIP=0
LISTEN=
PROFILE=
TAGS=
POWER_METER=
RAPL_ACCESS=0
NO_START=0
UNINSTALL=0
PURGE=0

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --source) need_value "$@"; SOURCE=$2; shift 2 ;;
        --extras) need_value "$@"; EXTRAS=$2; shift 2 ;;
        --onnxruntime) need_value "$@"; ORT_SPEC=$2; shift 2 ;;
        --python) need_value "$@"; PYTHON=$2; shift 2 ;;
        --venv) need_value "$@"; VENV=$2; shift 2 ;;
        --pip-args) need_value "$@"; PIP_ARGS=$2; shift 2 ;;
        --skip-pip) SKIP_PIP=1; shift ;;
        --listen) need_value "$@"; LISTEN=$2; shift 2 ;;
        --profile) need_value "$@"; PROFILE=$2; shift 2 ;;
        --tags) need_value "$@"; TAGS=$2; shift 2 ;;
        --power-meter) need_value "$@"; POWER_METER=$2; shift 2 ;;
        --rapl-access) RAPL_ACCESS=1; shift ;;
        --no-start) NO_START=1; shift ;;
        --root | --prefix) need_value "$@"; ROOT=$2; shift 2 ;;
        --uninstall) UNINSTALL=1; shift ;;
        --purge) PURGE=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option: $1 (see --help)" ;;
    esac
done

[[ $VENV == /*/* && $VENV != */ ]] || die "--venv must be an absolute path below a directory, e.g. /opt/edgeprof/venv: $VENV"
[[ $PURGE -eq 0 || $UNINSTALL -eq 1 ]] || die "--purge only goes with --uninstall"
for value in "$PROFILE" "$TAGS" "$POWER_METER"; do
    [[ $value != *[[:space:]\"\'\\]* ]] || die "settings may not contain spaces, quotes or backslashes: '$value'"
done
if [[ -n $LISTEN ]]; then
    [[ $LISTEN =~ ^(.+):([0-9]{1,5})$ ]] || die "--listen must be HOST:PORT, got '$LISTEN'"
    port_number=$((10#${BASH_REMATCH[2]}))
    ((port_number >= 1 && port_number <= 65535)) || die "port out of range in '$LISTEN'"
fi

# With --root other than /, nothing outside DIR is touched: system commands are only printed.
ROOT=${ROOT%/}
if [[ -z $ROOT ]]; then
    LIVE=1
else
    LIVE=0
    mkdir -p -- "$ROOT"
    ROOT=$(cd -- "$ROOT" && pwd)
fi
if [[ $LIVE -eq 1 && $EUID -ne 0 ]]; then
    die "run as root (sudo $0 ...), or use --root DIR to install into a directory"
fi

# r PATH: where PATH of the target system is on this machine.
r() { printf '%s%s' "$ROOT" "$1"; }
# sys CMD...: run a command that changes the system outside the install tree, or show it.
sys() {
    if [[ $LIVE -eq 1 ]]; then
        "$@"
    else
        echo "    would run: $*"
    fi
}

# ---- uninstall --------------------------------------------------------------------------------
uninstall() {
    say "Uninstalling $SERVICE"
    if [[ $LIVE -eq 0 ]]; then
        sys systemctl disable --now "$SERVICE"
    elif command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl disable --now "$SERVICE" 2>/dev/null || true
    fi
    # The wants link is systemctl's where systemd runs; where it does not, the installer made it.
    rm -f -- "$(r "$UNIT_FILE")" "$(r "$GROUPS_DROPIN")" "$(r "$RAPL_RULE")" "$(r "$WANTS_LINK")"
    rmdir -- "$(r "$DROPIN_DIR")" 2>/dev/null || true
    rm -rf -- "$(r "$VENV")" "$(r "$ETC_DIR")"
    rmdir -- "$(dirname -- "$(r "$VENV")")" 2>/dev/null || true
    if [[ $LIVE -eq 1 ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl daemon-reload
    elif [[ $LIVE -eq 0 ]]; then
        sys systemctl daemon-reload
    fi
    if [[ $PURGE -eq 1 ]]; then
        rm -rf -- "$(r "$DATA_DIR")"
        if [[ $LIVE -eq 0 ]]; then
            sys userdel "$SERVICE_USER"
        elif getent passwd "$SERVICE_USER" >/dev/null; then
            userdel "$SERVICE_USER"
        fi
        say "Removed $DATA_DIR and the $SERVICE_USER user"
    else
        say "Kept $DATA_DIR (cached models, unfetched results) and the $SERVICE_USER user; --purge removes them"
    fi
}
if [[ $UNINSTALL -eq 1 ]]; then
    uninstall
    exit 0
fi

# ---- checks -----------------------------------------------------------------------------------
[[ -f $SCRIPT_DIR/$SERVICE.service ]] || die "$SCRIPT_DIR/$SERVICE.service is missing: run this script from an edgeprof checkout"
command -v "$PYTHON" >/dev/null || die "no Python interpreter '$PYTHON' (use --python PATH)"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    die "$("$PYTHON" -V 2>&1) is too old: edgeprof needs Python 3.10 or newer (JetPack 5 ships 3.8; see deploy/jetson.md)"
fi
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
    die "$PYTHON cannot create venvs: install the venv module (Debian/Ubuntu: apt-get install python3-venv)"

# Local paths become absolute so pip does not mistake them for package names.
if [[ -e $SOURCE ]]; then
    SOURCE=$(cd -- "$(dirname -- "$SOURCE")" && pwd)/$(basename -- "$SOURCE")
fi

# ---- user and groups --------------------------------------------------------------------------
group_exists() {
    if [[ $LIVE -eq 1 ]]; then
        getent group "$1" >/dev/null
    else
        [[ -f $ROOT/etc/group ]] && grep -q "^$1:" "$ROOT/etc/group"
    fi
}

say "System user $SERVICE_USER"
nologin=$(command -v nologin || echo /usr/sbin/nologin)
if [[ $LIVE -eq 0 ]]; then
    sys useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell "$nologin" "$SERVICE_USER"
elif ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --user-group --home-dir "$DATA_DIR" --no-create-home --shell "$nologin" "$SERVICE_USER"
fi

found_groups=()
for group in "${SENSOR_GROUPS[@]}"; do
    if group_exists "$group"; then
        found_groups+=("$group")
    fi
done
if [[ ${#found_groups[@]} -gt 0 ]]; then
    say "Sensor and device groups: ${found_groups[*]}"
    sys usermod --append --groups "$(
        IFS=,
        echo "${found_groups[*]}"
    )" "$SERVICE_USER"
else
    say "None of the sensor groups (${SENSOR_GROUPS[*]}) exist here; skipping group membership"
fi

# ---- directories ------------------------------------------------------------------------------
install -d -m 0755 -- "$(dirname -- "$(r "$VENV")")"
install -d -m 0750 -- "$(r "$ETC_DIR")" "$(r "$DATA_DIR")"
sys chown "root:$SERVICE_USER" "$ETC_DIR"
sys chown "$SERVICE_USER:$SERVICE_USER" "$DATA_DIR"

# ---- venv and package -------------------------------------------------------------------------
venv_python=$(r "$VENV")/bin/python
if [[ -x $venv_python ]] && "$venv_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    say "Reusing venv $VENV"
else
    say "Creating venv $VENV with $("$PYTHON" -V 2>&1)"
    rm -rf -- "$(r "$VENV")"
    "$PYTHON" -m venv -- "$(r "$VENV")"
fi

pip_args=()
if [[ -n $PIP_ARGS ]]; then
    read -r -a pip_args <<<"$PIP_ARGS"
fi
if [[ $SKIP_PIP -eq 1 ]]; then
    say "Skipping pip (--skip-pip): $VENV has no edgeprof in it"
else
    spec=$SOURCE
    if [[ -n $EXTRAS ]]; then
        spec="${SOURCE}[${EXTRAS}]"
    fi
    say "pip install $spec"
    "$venv_python" -m pip install --disable-pip-version-check --upgrade "${pip_args[@]}" "$spec"
    if [[ -n $ORT_SPEC ]]; then
        # onnxruntime and onnxruntime-gpu install the same `onnxruntime` module; having both
        # leaves whichever was installed last half-overwritten, so the PyPI one goes first.
        read -r -a ort_args <<<"$ORT_SPEC"
        say "Replacing onnxruntime with: $ORT_SPEC"
        "$venv_python" -m pip uninstall --disable-pip-version-check -y onnxruntime
        "$venv_python" -m pip install --disable-pip-version-check "${pip_args[@]}" "${ort_args[@]}"
    fi
    [[ -x $(r "$VENV")/bin/agent ]] || die "pip did not install the 'agent' command into $VENV/bin"
fi

# ---- token ------------------------------------------------------------------------------------
token_path=$(r "$TOKEN_FILE")
if [[ -s $token_path ]]; then
    say "Keeping the existing token $TOKEN_FILE"
else
    say "Generating a bearer token in $TOKEN_FILE"
    # Written under umask 077 into the same directory, then renamed: the token is never
    # readable by anyone else, not even for a moment, and never half-written.
    tmp_token=$(umask 077 && mktemp -- "$token_path.XXXXXX")
    "$PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' >"$tmp_token"
    mv -f -- "$tmp_token" "$token_path"
fi
# root:edgeprof 0640: the service reads it through its own group (which has no other member) but
# cannot rewrite or chmod it, as it could a file it owned. The agent accepts exactly this layout
# without a warning (agent/token_file.py); any other reader makes it warn at every start.
chmod 0640 -- "$token_path"
sys chown "root:$SERVICE_USER" "$TOKEN_FILE"

# ---- settings (agent.env) ---------------------------------------------------------------------
# Previous values are the defaults, so a rerun that only passes --tags keeps the profile.
env_path=$(r "$ENV_FILE")
old_listen=
old_args=
if [[ -f $env_path ]]; then
    while IFS= read -r line; do
        case $line in
            EDGEPROF_LISTEN=*) old_listen=${line#EDGEPROF_LISTEN=} ;;
            EDGEPROF_AGENT_ARGS=*) old_args=${line#EDGEPROF_AGENT_ARGS=} ;;
        esac
    done <"$env_path"
fi
old_listen=${old_listen//\"/}
old_args=${old_args//\"/}

# Split the old argument string into the options this script manages and the rest, which an
# administrator may have added by hand (--no-advertise, --tls-cert ...) and which is kept.
other_args=()
read -r -a old_words <<<"$old_args"
i=0
while [[ $i -lt ${#old_words[@]} ]]; do
    word=${old_words[$i]}
    next=${old_words[$((i + 1))]:-}
    case $word in
        --profile) [[ -n $PROFILE ]] || PROFILE=$next; i=$((i + 2)) ;;
        --tags) [[ -n $TAGS ]] || TAGS=$next; i=$((i + 2)) ;;
        --power-meter) [[ -n $POWER_METER ]] || POWER_METER=$next; i=$((i + 2)) ;;
        *) other_args+=("$word"); i=$((i + 1)) ;;
    esac
done
LISTEN=${LISTEN:-${old_listen:-0.0.0.0:50051}}
agent_args=()
[[ -z $PROFILE ]] || agent_args+=(--profile "$PROFILE")
[[ -z $TAGS ]] || agent_args+=(--tags "$TAGS")
[[ -z $POWER_METER ]] || agent_args+=(--power-meter "$POWER_METER")
agent_args+=("${other_args[@]}")

say "Settings in $ENV_FILE: listen $LISTEN${agent_args[*]:+, ${agent_args[*]}}"
tmp_env=$(mktemp -- "$env_path.XXXXXX")
cat >"$tmp_env" <<EOF
# edgeprof agent settings, read by $SERVICE.service. Rerunning install-agent.sh rewrites this
# file but keeps values it is not given. Apply changes with: systemctl restart $SERVICE
# No secrets here: the bearer token lives in $TOKEN_FILE.
EDGEPROF_LISTEN=$LISTEN
# Extra arguments for \`agent serve\`, split at spaces, e.g. --no-advertise or
# --tls-cert /etc/edgeprof/agent.crt --tls-key /etc/edgeprof/agent.key
EDGEPROF_AGENT_ARGS=${agent_args[*]}
EOF
chmod 0644 -- "$tmp_env"
mv -f -- "$tmp_env" "$env_path"

# ---- systemd unit -----------------------------------------------------------------------------
say "Unit $UNIT_FILE"
install -d -m 0755 -- "$(dirname -- "$(r "$UNIT_FILE")")"
tmp_unit=$(mktemp -- "$(r "$UNIT_FILE").XXXXXX")
sed "s|/opt/edgeprof/venv|$VENV|g" -- "$SCRIPT_DIR/$SERVICE.service" >"$tmp_unit"
chmod 0644 -- "$tmp_unit"
mv -f -- "$tmp_unit" "$(r "$UNIT_FILE")"

if [[ ${#found_groups[@]} -gt 0 ]]; then
    install -d -m 0755 -- "$(r "$DROPIN_DIR")"
    cat >"$(r "$GROUPS_DROPIN")" <<EOF
# Written by install-agent.sh: the sensor and device groups that exist on this board.
[Service]
SupplementaryGroups=${found_groups[*]}
EOF
    chmod 0644 -- "$(r "$GROUPS_DROPIN")"
else
    rm -f -- "$(r "$GROUPS_DROPIN")"
fi

# ---- RAPL access (optional) -------------------------------------------------------------------
if [[ $RAPL_ACCESS -eq 1 ]]; then
    say "udev rule $RAPL_RULE (edgeprof group may read RAPL energy_uj)"
    install -d -m 0755 -- "$(dirname -- "$(r "$RAPL_RULE")")"
    install -m 0644 -- "$SCRIPT_DIR/udev/99-edgeprof-rapl.rules" "$(r "$RAPL_RULE")"
    # Apply it now as well as at every boot; in a chroot or container there is no udevd to ask.
    if [[ $LIVE -eq 1 && ! -S /run/udev/control ]]; then
        say "udevd is not running here: the rule takes effect at the next boot"
    else
        sys udevadm control --reload
        sys udevadm trigger --subsystem-match=powercap --action=add
    fi
fi

# ---- start ------------------------------------------------------------------------------------
# The command the unit runs, as the service user, for where no systemd runs it: a container, a chroot,
# an image being built. Printed at the end; its arguments are those of ExecStart= with agent.env applied.
# setpriv (util-linux) becomes the user with its groups and a clean environment (HOME is the data
# directory, as under the unit) and then execs the agent, so a container's stop signal reaches the
# agent itself; runuser and su stay as a parent that kills it 2 s after SIGTERM, cutting its shutdown.
hand_command=(setpriv "--reuid=$SERVICE_USER" "--regid=$SERVICE_USER" --init-groups --reset-env --
    "$VENV/bin/agent" serve --listen "$LISTEN" --token-file "$TOKEN_FILE" --data-dir "$DATA_DIR" "${agent_args[@]}")
started=0
if [[ $LIVE -eq 1 && ! -d /run/systemd/system ]]; then
    # No systemd here (container, chroot, image build): nothing can start the unit now, and systemctl may
    # not even be installed. Enable it the way `systemctl enable` does for WantedBy=multi-user.target, so
    # the unit starts when this system boots with systemd, and tell how to start the agent by hand.
    say "systemd is not running here (container or chroot): unit enabled for the next boot with systemd, not started"
    install -d -m 0755 -- "$(dirname -- "$WANTS_LINK")"
    ln -sfn -- "$UNIT_FILE" "$WANTS_LINK"
elif [[ $NO_START -eq 1 ]]; then
    sys systemctl daemon-reload
    sys systemctl enable "$SERVICE"
else
    sys systemctl daemon-reload
    sys systemctl enable "$SERVICE"
    # restart, not start: a rerun after an upgrade must load the new code and settings.
    sys systemctl restart "$SERVICE"
    if [[ $LIVE -eq 1 ]]; then
        sleep 2
        if ! systemctl is-active --quiet "$SERVICE"; then
            journalctl -u "$SERVICE" -n 20 --no-pager >&2 || true
            die "$SERVICE did not stay up; see: journalctl -u $SERVICE"
        fi
        say "$SERVICE is running"
        started=1
    fi
fi

# ---- what the host needs ----------------------------------------------------------------------
port=${LISTEN##*:}
address=${LISTEN%:*}
case $address in
    0.0.0.0 | "[::]" | "::" | "") address="$(uname -n).local" ;;
esac
echo
echo "Agent address: $address:$port    token: $TOKEN_FILE (root:$SERVICE_USER, 0640)"
echo "Copy the token to the host, e.g.: ssh $(uname -n) sudo cat $TOKEN_FILE > ~/.config/edgeprof/$(uname -n).token"
echo "host profile model.onnx --device $address:$port --token-file ~/.config/edgeprof/$(uname -n).token"
if [[ $started -eq 0 ]]; then
    # %q quotes each word for the shell, so the line can be pasted or used in a container's entrypoint.
    hand_line=$(printf '%q ' "${hand_command[@]}")
    echo "Without systemd (container, chroot), start the agent by hand with: ${hand_line% }"
fi
