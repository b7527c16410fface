#!/usr/bin/env bash
# Builds and installs hookops (and kube-sandbox, its test cluster), then runs the demo: a
# scratch bare repository with the real hook installed, an example pushed through it.
#
#   ./install.sh                 build (release), install to $PREFIX/bin (default ~/.local), run the demo
#   ./install.sh --no-demo       build and install only
#   ./install.sh --deb           build the Debian package instead (needs cargo-deb)
set -euo pipefail
cd "$(dirname "$0")"
PREFIX=${PREFIX:-$HOME/.local}
demo=1
for arg in "$@"; do
  case "$arg" in
    --no-demo) demo=0 ;;
    --deb) exec ./scripts/deb.sh ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
for tool in cargo git; do
  command -v "$tool" >/dev/null || { echo "install.sh: $tool is required" >&2; exit 1; }
done
echo "==> building hookops (release)"
cargo build --release --locked --workspace --bins
mkdir -p "$PREFIX/bin"
install -m 0755 target/release/hookops target/release/kube-sandbox "$PREFIX/bin/"
echo "==> installed $PREFIX/bin/hookops and $PREFIX/bin/kube-sandbox"
"$PREFIX/bin/hookops" --version
case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) echo "    (add $PREFIX/bin to your PATH)";; esac
if [ "$demo" = 1 ]; then
  exec ./scripts/demo.sh "$PREFIX/bin/hookops"
fi
