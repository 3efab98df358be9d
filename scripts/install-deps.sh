#!/usr/bin/env bash
# Installs the Debian packages libem needs to build and test, only if some are
# missing: a machine that has them all runs no apt at all.
# EM_SKIP_DEPS=1 skips the check.
set -euo pipefail

# openssl: the command that makes the TLS tests' and benchmarks' certificates;
# gnutls-bin: gnutls-cli and gnutls-serv, a TLS peer that is not OpenSSL;
# curl: the client of tests/http_file_server.sh, and an HTTP client that
# decodes the chunked files of tests/test_file.c;
# mandoc: make docs renders and lints the man pages with it (tests/docs.sh);
# python3: scripts/gen-man.py writes them, fuzz/gen_seeds.py the TLS seeds.
# ruby, ruby-dev, ruby-eventmachine, ruby-test-unit: make ruby builds
# EventMachine's extension on libem and the ruby suite runs EventMachine's
# Ruby layer on it (ruby/README.md).
# liburing-dev: libem's io_uring backend (built only where it is found),
# which the suite runs on as its third backend, and the io_uring floor of
# the benchmarks (bench/servers/echo_uring.c).
packages=(cmake gcc make pkg-config libssl-dev openssl clang libclang-rt-14-dev strace gnutls-bin
          curl mandoc python3 ruby ruby-dev ruby-eventmachine ruby-test-unit liburing-dev)

if [[ "${EM_SKIP_DEPS:-0}" == 1 ]]; then
    exit 0
fi
if ! command -v dpkg >/dev/null 2>&1; then
    echo "install-deps: no dpkg here; install these yourself: ${packages[*]}" >&2
    exit 0
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]} == 0)); then
    exit 0
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "install-deps: missing ${missing[*]}, and no sudo to install them" >&2
        exit 1
    fi
    sudo=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update
${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
