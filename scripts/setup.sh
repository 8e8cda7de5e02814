#!/usr/bin/env bash
# Install what lmdm_live needs: system packages (JACK, PortAudio, sox, espeak-ng, the SuperCollider
# language and server for the sc_bridge quark and its tests, FluidSynth and a GM soundfont for the
# training-data renderer) and a local virtual environment in .venv
# with the package installed in editable mode.
#   --with-tidal   also install GHC and Tidal (about 845 MB), for the Tidal integration test (-m slow)
# Idempotent and fast on a re-run: packages already installed are not asked for again, and pip is
# skipped while pyproject.toml is unchanged.
set -euo pipefail

WITH_TIDAL=0
for arg in "$@"; do
    case "$arg" in
        --with-tidal) WITH_TIDAL=1 ;;
        -h | --help)
            sed -n '2,7p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "setup.sh: unknown option '$arg' (known: --with-tidal)" >&2
            exit 2
            ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

TORCH_VERSION="2.13.0"
APT_PACKAGES=(jackd2 libjack-jackd2-0 libportaudio2 sox espeak-ng supercollider-language supercollider-server
    fluidsynth libfluidsynth3 fluid-soundfont-gm)
TIDAL_PACKAGES=(ghc libghc-tidal-dev)
if ((WITH_TIDAL)); then
    APT_PACKAGES+=("${TIDAL_PACKAGES[@]}")
fi
VENV="$ROOT/.venv"
STAMP="$VENV/.lmdm-stamp"

log() { printf '[setup] %s\n' "$*" >&2; }

# --- system packages ---------------------------------------------------------------------------
missing=()
installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
for pkg in "${APT_PACKAGES[@]}"; do
    if ! installed "$pkg"; then
        missing+=("$pkg")
    fi
done
# Debian/Ubuntu ship venv's pip bootstrap separately.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if ((${#missing[@]})); then
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing system packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        # wait for another apt/dpkg run (a parallel setup) instead of failing on its lock
        apt-get -o DPkg::Lock::Timeout=600 update -qq
        apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "lmdm_live needs these system packages, which are not installed: ${missing[*]}" >&2
        echo "Install them with:  sudo apt-get install -y ${missing[*]}" >&2
        echo "then run this script again." >&2
        exit 1
    fi
fi

# --- virtual environment -----------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
fi

want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" || ! -x "$VENV/bin/lmdm-live" ]]; then
    log "installing torch==$TORCH_VERSION and lmdm_live[train,dev] into .venv"
    # torch first and pinned, so the resolver never swaps it for another build.
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
    "$VENV/bin/python" -m pip install -q -e '.[train,dev]'
    printf '%s\n' "$want" >"$STAMP"
    log "done"
fi
