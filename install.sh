#!/usr/bin/env bash
# Builds and installs hookops (and kube-sandbox, the bundled Kubernetes API emulator) with its
# man pages and shell completions, then runs the demo: a scratch bare repository with the real
# hook installed and an example pushed through it, deployed to a kube-sandbox started for the
# demo. The demo never touches a cluster you did not name.
#
#   ./install.sh                  build (release), install under $PREFIX (default ~/.local), run the demo
#   ./install.sh --context NAME   the demo deploys to your kubectl context NAME instead of the sandbox
#   ./install.sh --no-demo        build and install only
#   ./install.sh --profile NAME   build with another cargo profile (default: release)
#   ./install.sh --no-build       install what the target directory already holds
#   ./install.sh --deb            build the Debian package instead (needs cargo-deb)
#
# Installs $PREFIX/bin/{hookops,kube-sandbox}, $PREFIX/share/man/man1/hookops*.1 and the bash,
# zsh and fish completions under $PREFIX/share. Honours CARGO_TARGET_DIR (and cargo's own
# build.target-dir setting).
set -euo pipefail
cd "$(dirname "$0")"
PREFIX=${PREFIX:-$HOME/.local}
demo=1
build=1
profile=release
demo_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-demo) demo=0 ;;
    --no-build) build=0 ;;
    --profile) [ $# -ge 2 ] || { echo "install.sh: --profile needs a name" >&2; exit 2; }
               profile=$2; shift ;;
    --context) [ $# -ge 2 ] || { echo "install.sh: --context needs a kubectl context name" >&2; exit 2; }
               demo_args=(--context "$2"); shift ;;
    --deb) exec ./scripts/deb.sh ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see ./install.sh --help)" >&2; exit 2 ;;
  esac
  shift
done
for tool in cargo git; do
  command -v "$tool" >/dev/null || { echo "install.sh: $tool is required" >&2; exit 1; }
done

# Where cargo puts what it builds: CARGO_TARGET_DIR, build.target-dir, or ./target.
target_dir=$(cargo metadata --format-version 1 --no-deps --offline |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "install.sh: cargo metadata named no target directory" >&2; exit 1; }
case "$profile" in
  dev|test) out="$target_dir/debug" ;;
  bench) out="$target_dir/release" ;;
  *) out="$target_dir/$profile" ;;
esac

if [ "$build" = 1 ]; then
  echo "==> building hookops ($profile)"
  cargo build --profile "$profile" --locked --workspace --bins
fi
for file in "$out/hookops" "$out/kube-sandbox" "$out/assets/man/hookops.1"; do
  [ -e "$file" ] || { echo "install.sh: $file is missing (build first, or drop --no-build)" >&2; exit 1; }
done

mkdir -p "$PREFIX/bin" "$PREFIX/share/man/man1" "$PREFIX/share/bash-completion/completions" \
  "$PREFIX/share/zsh/site-functions" "$PREFIX/share/fish/vendor_completions.d"
install -m 0755 "$out/hookops" "$out/kube-sandbox" "$PREFIX/bin/"
install -m 0644 "$out"/assets/man/*.1 "$PREFIX/share/man/man1/"
install -m 0644 "$out/assets/completions/hookops.bash" "$PREFIX/share/bash-completion/completions/hookops"
install -m 0644 "$out/assets/completions/_hookops" "$PREFIX/share/zsh/site-functions/_hookops"
install -m 0644 "$out/assets/completions/hookops.fish" "$PREFIX/share/fish/vendor_completions.d/hookops.fish"
echo "==> installed $PREFIX/bin/hookops and $PREFIX/bin/kube-sandbox"
echo "    man pages in $PREFIX/share/man/man1 (man hookops, man hookops-drift, ...)"
echo "    completions for bash, zsh and fish under $PREFIX/share"
"$PREFIX/bin/hookops" --version
case ":$PATH:" in
  *":$PREFIX/bin:"*) ;;
  *) echo "    add $PREFIX/bin to your PATH (man then finds the pages too; else MANPATH=$PREFIX/share/man:)" ;;
esac
if [ "$demo" = 1 ]; then
  exec ./scripts/demo.sh ${demo_args[@]+"${demo_args[@]}"} "$PREFIX/bin/hookops"
fi
