#!/usr/bin/env bash
# Sourced by .ci/run and .ci/test: makes sure the services the tests talk to are up on loopback
# (PostgreSQL, Redis, an S3-compatible server) and the tools they need are installed
# (cargo-nextest; Chromium and ChromeDriver from Debian), and exports DATABASE_URL, REDIS_URL and
# S3_ENDPOINT. Needs only Rust, Python 3 and apt (or the tools already installed).
echo "== services"
# PostgreSQL: the machine starts it before the session; start it again if it stopped.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }
# Redis (the shared rate limiter's tests use it).
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
  sleep 1
fi
# An S3-compatible server for the S3 media test (moto from PyPI, in-memory, loopback only).
export S3_ENDPOINT="${S3_ENDPOINT:-http://127.0.0.1:9000}"
if ! (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null; then
  command -v moto_server >/dev/null || python3 -m pip install --quiet --disable-pip-version-check "moto[server]==5.2.5"
  nohup moto_server -H 127.0.0.1 -p 9000 >/tmp/creapic-moto.log 2>&1 &
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null && break; sleep 0.2; done
fi
(exec 3<>/dev/tcp/127.0.0.1/9000) 2>/dev/null || { echo "no S3-compatible server on 127.0.0.1:9000" >&2; exit 1; }
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

echo "== tools"
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
# Headless Chromium renders the API reference page (examples/tests/reference.rs), and ChromeDriver
# drives it through the console (examples/tests/console*.rs), both from Debian.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/tmp/creapic-apt.log 2>&1 \
    || { cat /tmp/creapic-apt.log; echo "could not install chromium and chromium-driver" >&2; exit 1; }
fi
command -v chromedriver >/dev/null 2>&1 || { echo "chromedriver is missing after installing chromium-driver" >&2; exit 1; }

