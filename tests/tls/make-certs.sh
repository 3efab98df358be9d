#!/bin/sh
# Makes the certificates the TLS tests use, in the directory given (never
# committed: keys are made at test time). P-256 keys, so it takes a moment.
#
#   ca.pem            the test CA (trusted by the tests through ca_file)
#   other-ca.pem      a CA nobody trusts
#   server.pem/.key   localhost, 127.0.0.1 and ::1, from ca
#   server-enc.key    server.key encrypted with the passphrase "secret"
#   wronghost.pem     other.example only, from ca (key: server.key)
#   ip.pem            127.0.0.1 only, from ca (key: server.key)
#   untrusted.pem     localhost, from other-ca (key: server.key)
#   selfsigned.pem    localhost, signed by its own key (server.key)
#   expired.pem       localhost, from ca, valid in 2020 only
#   future.pem        localhost, from ca, valid from 2090
#   client.pem/.key   a client certificate from ca
#   client-other.pem  a client certificate from other-ca (key: client.key)
#   chain.pem         server.pem then ca.pem
set -eu
dir=$1
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

make_ca() { # name cn
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 -out "$1.pem" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    mkdir -p "$1.db"
    : >"$1.db/index.txt"
    cat >"$1.cnf" <<CNF
[ca]
default_ca = the_ca
[the_ca]
database = $1.db/index.txt
new_certs_dir = $1.db
serial = $1.db/serial
certificate = $1.pem
private_key = $1.key
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[any]
commonName = supplied
CNF
    openssl rand -hex 8 >"$1.db/serial"
}

# leaf NAME KEY CA SUBJECT_ALT_NAME [openssl ca dates...]
leaf() {
    name=$1 k=$2 ca=$3 san=$4
    shift 4
    openssl req -new -key "$k" -subj "/CN=$name" -addext "subjectAltName=$san" -out "$name.csr"
    openssl ca -batch -notext -config "$ca.cnf" -in "$name.csr" -out "$name.pem" "$@" 2>/dev/null
    rm -f "$name.csr"
}

make_ca ca libem-test-ca
make_ca other-ca libem-untrusted-ca
key server.key
key client.key
openssl pkey -in server.key -aes256 -passout pass:secret -out server-enc.key

here="DNS:localhost,IP:127.0.0.1,IP:::1"
leaf server server.key ca "$here" -days 365
leaf wronghost server.key ca "DNS:other.example" -days 365
leaf ip server.key ca "IP:127.0.0.1" -days 365
leaf untrusted server.key other-ca "$here" -days 365
leaf expired server.key ca "$here" -startdate 20200101000000Z -enddate 20201231000000Z
leaf future server.key ca "$here" -startdate 20900101000000Z -enddate 20910101000000Z
leaf client client.key ca "DNS:client.test" -days 365
leaf client-other client.key other-ca "DNS:client.test" -days 365
openssl req -x509 -new -key server.key -subj /CN=localhost -days 365 -out selfsigned.pem \
    -addext "subjectAltName=$here"
cat server.pem ca.pem >chain.pem
