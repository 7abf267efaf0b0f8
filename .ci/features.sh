#!/usr/bin/env bash
# Every supported feature set of each library crate compiles without warnings: CI's other steps
# build only `--all-features`, so a `cfg(not(feature = …))` path or a feature that leans on
# another would otherwise never be compiled. `cargo check` (no codegen), libraries only.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} -D warnings"
check() {
  echo "-- cargo check -p $*"
  cargo check --quiet --lib -p "$@"
}
check creapic-core --no-default-features
check creapic-core --no-default-features --features wire
check creapic-core --no-default-features --features openapi
check creapic-core --no-default-features --features sqlite
check creapic-core --no-default-features --features postgres
check creapic-core --no-default-features --features testing
check creapic-client --no-default-features
check creapic-client
check creapic-server-kit --no-default-features
check creapic-server-kit --no-default-features --features gemini
check creapic-server-kit --no-default-features --features openai
check creapic-server-kit --no-default-features --features s3
check creapic-server-kit --no-default-features --features redis
check creapic-server-kit --all-features
# An integrator's build of the client compiles no OpenAPI machinery.
if cargo tree -p creapic-client -e normal --prefix none | grep -q '^utoipa '; then
  echo "creapic-client depends on utoipa outside its tests" >&2
  exit 1
fi
