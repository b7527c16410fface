#!/usr/bin/env bash
# Builds the Debian package with cargo-deb and prints the path of the .deb on the last line.
#
#   scripts/deb.sh                      release build, then target/debian/hookops_<version>_<arch>.deb
#   scripts/deb.sh --no-build           package what `cargo build --release` already built
#   scripts/deb.sh --profile dev        package the debug build (the test suite does this, with
#                                       --no-build, to avoid a second full build; not for release)
#   scripts/deb.sh --output DIR         write the .deb into DIR
#
# Needs cargo-deb (`cargo install cargo-deb --locked`; installed here when missing, unless
# HOOKOPS_DEB_NO_INSTALL=1). The man pages and shell completions the package ships are written
# by build.rs beside the binary (target/<profile>/assets/), so the build step always precedes
# packaging; with --no-build they must already be there. See docs/packaging.md.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
profile=release
output=target/debian
fast=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0 ;;
    --profile) profile=${2:?--profile needs a value}; shift ;;
    --profile=*) profile=${1#--profile=} ;;
    --output) output=${2:?--output needs a value}; shift ;;
    --output=*) output=${1#--output=} ;;
    --fast) fast=(--fast) ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "deb.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if ! cargo deb --version >/dev/null 2>&1; then
  if [ "${HOOKOPS_DEB_NO_INSTALL:-}" = 1 ]; then
    echo "deb.sh: cargo-deb is missing (cargo install cargo-deb --locked)" >&2
    exit 1
  fi
  echo "==> installing cargo-deb (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked >&2
fi

case "$profile" in
  dev|debug) profile_dir=debug ;;
  *) profile_dir=$profile ;;
esac
if [ "$build" = 1 ]; then
  echo "==> building hookops ($profile)" >&2
  cargo build --locked --profile "$profile" -p hookops --bin hookops >&2
fi
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
for f in hookops assets/man/hookops.1 assets/completions/hookops.bash; do
  if [ ! -e "$target_dir/$profile_dir/$f" ]; then
    echo "deb.sh: $target_dir/$profile_dir/$f is missing; build first (drop --no-build)" >&2
    exit 1
  fi
done

mkdir -p "$output"
echo "==> packaging (cargo deb)" >&2
# cargo-deb prints the .deb path on stdout; everything else goes to stderr so this script's own
# stdout is exactly that path.
deb=$(cargo deb --no-build --locked -p hookops --profile "$profile" --output "$output" "${fast[@]}" | tail -n 1)
if [ ! -f "$deb" ]; then
  echo "deb.sh: cargo deb did not produce a package" >&2
  exit 1
fi
# Absolute, so the path is usable from wherever ./install.sh --deb was started.
echo "$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")"
