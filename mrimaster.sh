#!/usr/bin/env bash
# MRIMaster from a fresh clone, nothing to type before it (the Makefile calls this script):
#   ./mrimaster.sh run [serve options]   set up (if needed) and start the web app
#   ./mrimaster.sh test [pytest args]    set up what the tests need, ruff, mypy, then pytest
#   ./mrimaster.sh pytest [pytest args]  the same without ruff and mypy
#   ./mrimaster.sh check                 hadolint, checkov, the API reference (pdoc)
#   ./mrimaster.sh setup                 only the set-up (the environment with dev extras, web assets)
# Installs happen once: a stamp records what pyproject.toml / web/package-lock.json were, and the
# next run skips pip and npm while they are unchanged. The environment is .venv
# (MRIMASTER_VENV to change it); python3 (3.11 or newer) makes it (PYTHON to change it).
set -euo pipefail
cd "$(dirname "$0")"
ROOT="$PWD"
VENV="${MRIMASTER_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
# The CPU wheels of these exact versions are on the CI machines' disk (see README).
TORCH=(torch==2.14.1 torchvision==0.29.1)

if [ -t 2 ]; then say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
else say() { printf '==> %s\n' "$*" >&2; }; fi
die() { printf 'mrimaster.sh: %s\n' "$*" >&2; exit 1; }
digest() { cat "$@" | sha256sum | cut -c1-16; }
is_root() { [ "$(id -u)" = 0 ]; }

# The virtual environment with the package installed editable and the given extras ("fast",
# "dev,fast"); extras installed before are kept.
ensure_env() {
    local want="$1" stamp="$VENV/.mrimaster-installed" have="" sum
    sum="$(digest pyproject.toml)"
    if [ ! -x "$VENV/bin/python" ]; then
        command -v "$PYTHON" >/dev/null || die "no $PYTHON: install Python 3.11 or newer"
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || die "$PYTHON is $("$PYTHON" -V 2>&1); MRIMaster needs 3.11 or newer (PYTHON=...)"
        say "creating the virtual environment $VENV"
        "$PYTHON" -m venv "$VENV"
        rm -f "$stamp"
    fi
    if [ -f "$stamp" ]; then
        local line; line="$(cat "$stamp")"
        have="${line#* }"
        if [ "${line%% *}" = "$sum" ]; then
            local e missing=""
            for e in ${want//,/ }; do [[ ",$have," == *",$e,"* ]] || missing=1; done
            [ -z "$missing" ] && { activate; return; }
        fi
    fi
    local extras
    extras="$(printf '%s\n' ${have//,/ } ${want//,/ } | sort -u | paste -sd, -)"
    say "installing PyTorch and mrimaster[$extras] into $VENV (once; a few minutes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "${TORCH[@]}"
    "$VENV/bin/python" -m pip install -q -e ".[$extras]"
    echo "$sum $extras" > "$stamp"
    activate
}

activate() {
    case "$VENV" in /*) VIRTUAL_ENV="$VENV" ;; *) VIRTUAL_ENV="$ROOT/$VENV" ;; esac
    export VIRTUAL_ENV
    export PATH="$VIRTUAL_ENV/bin:$PATH"
}

# The JavaScript the web app serves itself (NiiVue, Swagger UI), from npm, pinned by
# web/package-lock.json; npm's postinstall copies it into src/mrimaster/serving/static/vendor/.
ensure_web() {
    local stamp=web/node_modules/.mrimaster-installed sum
    sum="$(digest web/package.json web/package-lock.json web/copy-vendor.cjs)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ] \
        && [ -n "$(ls -A src/mrimaster/serving/static/vendor 2>/dev/null)" ]; then
        return
    fi
    command -v npm >/dev/null || die "no npm: install Node.js 18 or newer (Debian: apt-get install npm)"
    say "installing the web app's JavaScript (npm ci --prefix web)"
    npm ci --prefix web --prefer-offline --no-audit --no-fund --loglevel=error
    echo "$sum" > "$stamp"
}

apt_install() {
    say "apt-get install $*"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# Debian's chromium for the browser tests (Playwright cannot download its own here).
ensure_chromium() {
    command -v chromium >/dev/null && return
    if is_root && command -v apt-get >/dev/null; then apt_install chromium
    else say "warning: no chromium on PATH, the browser tests will fail (apt-get install chromium)"; fi
}

# Orthanc and its DICOMweb plugin: the PACS tests (tests/pacs) start their own on loopback.
ensure_orthanc() {
    command -v Orthanc >/dev/null && [ -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] && return
    if is_root && command -v apt-get >/dev/null; then apt_install orthanc orthanc-dicomweb
    else say "warning: no Orthanc with its DICOMweb plugin, the PACS tests will fail (apt-get install orthanc orthanc-dicomweb)"; fi
}

# dicom3tools' dciodvfy: the tests validate the DICOM SEG and the simulated studies against the
# standard's IODs with it.
ensure_dicom3tools() {
    command -v dciodvfy >/dev/null && return
    if is_root && command -v apt-get >/dev/null; then apt_install dicom3tools
    else say "warning: no dciodvfy, the DICOM validation tests will fail (apt-get install dicom3tools)"; fi
}

# A throw-away PostgreSQL 15 server for the tests, stopped and removed when this script exits.
PGDIR=""
start_postgres() {
    if [ -n "${MRIMASTER_TEST_DATABASE_URL:-}" ]; then return; fi
    # Debian's postgresql-15 keeps its programs off PATH
    if ! command -v initdb >/dev/null && [ -x /usr/lib/postgresql/15/bin/initdb ]; then
        export PATH="$PATH:/usr/lib/postgresql/15/bin"
    fi
    if ! command -v initdb >/dev/null && is_root && command -v apt-get >/dev/null; then
        apt_install postgresql-15 && export PATH="$PATH:/usr/lib/postgresql/15/bin"
    fi
    if ! command -v initdb >/dev/null; then
        say "warning: no PostgreSQL 15 (initdb, pg_ctl) on PATH, the PostgreSQL tests will fail"
        return
    fi
    local port
    port="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    PGDIR="$(mktemp -d /tmp/mrimaster-test-pg.XXXXXX)"
    trap stop_postgres EXIT
    eval "$(.ci/postgres.sh "$PGDIR" "$port")"
    say "PostgreSQL 15 for the tests on 127.0.0.1:$port (stopped at exit)"
}
stop_postgres() {
    [ -n "$PGDIR" ] || return 0
    local cmd=(pg_ctl -D "$PGDIR/data" -m fast stop)
    if is_root; then runuser -u postgres -- "${cmd[@]}" >/dev/null 2>&1 || true
    else "${cmd[@]}" >/dev/null 2>&1 || true; fi
    rm -rf "$PGDIR"
}

# The shared real datasets the `realdata` tests read.
data_root() {
    if [ -z "${MRIMASTER_DATA_ROOT:-}" ] && [ -d ../shared/datasets ]; then
        MRIMASTER_DATA_ROOT="$(cd ../shared/datasets && pwd)"
        export MRIMASTER_DATA_ROOT
    fi
    if [ -n "${MRIMASTER_DATA_ROOT:-}" ]; then say "data root: $MRIMASTER_DATA_ROOT"
    else say "warning: MRIMASTER_DATA_ROOT is not set and ../shared/datasets does not exist: the realdata tests will fail (-m \"not realdata\" leaves them out)"; fi
}

setup_tests() {
    ensure_env dev,fast
    ensure_web
    ensure_chromium
    ensure_orthanc
    ensure_dicom3tools
    data_root
    start_postgres
}

lint() {
    say "ruff"; ruff check src tests benchmarks
    say "mypy"; mypy
}

cmd="${1:-}"; [ $# -gt 0 ] && shift
case "$cmd" in
run)
    ensure_env fast
    ensure_web
    root="${MRIMASTER_DATA_ROOT:-$HOME/.mrimaster/data}"
    say "starting the web app: the database (SQLite) and uploaded files are kept under" \
        "$root/app (MRIMASTER_DATA_ROOT, MRIMASTER_APP_DIR, MRIMASTER_DATABASE_URL change it);" \
        "stop it with Ctrl-C"
    exec mrimaster serve "$@"
    ;;
test)
    setup_tests
    lint
    say "python -m pytest -q $*"
    python -m pytest -q "$@"
    ;;
pytest)
    setup_tests
    python -m pytest -q "$@"
    ;;
check)
    ensure_env dev,fast
    say "hadolint"; hadolint deploy/Dockerfile
    # checkov pins old versions of common packages: it gets its own environment
    if [ ! -x .venv-tools/bin/checkov ]; then
        say "installing checkov into .venv-tools (once)"
        "$PYTHON" -m venv .venv-tools && .venv-tools/bin/pip install -q checkov
    fi
    say "checkov"
    .venv-tools/bin/checkov -d deploy/aws --framework terraform --quiet --compact --skip-download
    # the API reference renders from the docstrings, any warning an error
    # (Metaflow, which the flows import, loads PyYAML's old `_yaml` alias, which warns on import)
    say "pdoc"
    out="$(mktemp -d)"
    python -W error -W "ignore::DeprecationWarning:_yaml" -m pdoc mrimaster -o "$out"
    rm -rf "$out"
    ;;
setup)
    ensure_env dev,fast
    ensure_web
    ;;
*)
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
