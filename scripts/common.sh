# shellcheck shell=bash disable=SC2034
# Sourced by scripts/dev-setup and scripts/test; not a command of its own.
#
# Settings (environment):
#   RTRACE_PYTHONS    the CPython versions to set up and test, space-separated
#                     (default: "3.11 3.12 3.13", every version rtrace supports)
#   CARGO_TARGET_DIR  one target directory for every build (default: ./target)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
read -r -a PYTHON_VERSIONS <<<"${RTRACE_PYTHONS:-3.11 3.12 3.13}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

venv_dir() { printf '%s/.venv-%s' "$ROOT" "$1"; }

# Seconds since $1 (a value of $SECONDS), as "12s".
elapsed() { printf '%ss' "$((SECONDS - $1))"; }

# Extra cargo flags: on CI (CI=true) Cargo.lock must already be up to date.
CARGO_FLAGS=()
if [[ "${CI:-}" == "true" ]]; then CARGO_FLAGS=(--locked); fi
