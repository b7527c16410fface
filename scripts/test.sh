#!/usr/bin/env bash
# The whole test suite: unit tests, the kube sandbox against the real kubectl, and the
# end-to-end tests (real git push, kubectl, terraform, OpenBao, sshd, Gitolite). Tools that are
# missing make a local run skip those tests with a printed reason; under CI=true they fail.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked "$@"
