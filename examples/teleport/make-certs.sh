#!/bin/sh
# Makes the mutual-TLS material for teleport-event-handler -> weir with the openssl CLI, the
# same set `teleport-event-handler configure` writes (see ../../docs/migration.md and the
# Teleport write-up):
#
#   ca.crt, ca.key          CN=CA, CA:TRUE, pathlen 0, keyUsage keyCertSign+cRLSign
#   server.crt, server.key  CN=Server, keyUsage digitalSignature, extendedKeyUsage serverAuth;
#                           server.key is encrypted (legacy PEM, AES-256-CBC) with a random
#                           64-hex-character passphrase, as `configure` does
#   client.crt, client.key  CN=Client, keyUsage digitalSignature, extendedKeyUsage clientAuth;
#                           client.key is not encrypted (the event handler cannot read an
#                           encrypted key)
#   digest.key, digest.pub  Ed25519: the key weir signs its S3 digests with (<digest> in
#                           fluent.conf, ../../docs/integrity.md), and its public half for
#                           `weir verify --public-key digest.pub`
#
# Both leaf certificates carry the subjectAltNames the client checks the server against: DNS
# localhost and IP 127.0.0.1 unless --dns-names / --ip say otherwise. Validity 10 years
# (87600 h), RSA 4096 unless --bits.
#
# The only line written to stdout is FLUENTD_KEY_PASSPHRASE=<passphrase>, so
#   ./make-certs.sh > .env
# leaves it where docker compose reads it. Everything else goes to stderr.
set -eu

usage() {
    cat >&2 <<'EOF'
usage: make-certs.sh [--out DIR] [--bits 2048|3072|4096] [--dns-names a,b] [--ip x,y] [--force]
  --out DIR        where to write the files (default: ./keys)
  --bits N         RSA key size (default 4096, as teleport-event-handler configure)
  --dns-names LIST DNS names weir is reached by (default: localhost), e.g.
                   localhost,weir.logging.svc,weir.logging.svc.cluster.local
  --ip LIST        IP addresses weir is reached by (default: 127.0.0.1)
  --force          overwrite existing files
Prints FLUENTD_KEY_PASSPHRASE=<64 hex characters> on stdout: the passphrase of server.key.
EOF
}

out=./keys
bits=4096
dns=localhost
ips=127.0.0.1
force=0
while [ $# -gt 0 ]; do
    case "$1" in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --bits) bits=${2:?--bits needs a number}; shift 2 ;;
    --dns-names) dns=${2?--dns-names needs a list}; shift 2 ;;
    --ip) ips=${2?--ip needs a list}; shift 2 ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "make-certs.sh: unknown option '$1'" >&2; usage; exit 2 ;;
    esac
done
case "$bits" in
2048 | 3072 | 4096) ;;
*) echo "make-certs.sh: --bits must be 2048, 3072 or 4096, not '$bits'" >&2; exit 2 ;;
esac
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is not installed" >&2; exit 1; }

# subjectAltName from the two comma lists: DNS:a,DNS:b,IP:x
san=""
old_ifs=$IFS
IFS=,
for n in $dns; do [ -n "$n" ] && san="${san:+$san,}DNS:$n"; done
for n in $ips; do [ -n "$n" ] && san="${san:+$san,}IP:$n"; done
IFS=$old_ifs
[ -n "$san" ] || { echo "make-certs.sh: give at least one DNS name or IP" >&2; exit 2; }

mkdir -p "$out"
if [ "$force" -eq 0 ]; then
    for f in ca.crt ca.key server.crt server.key client.crt client.key digest.key digest.pub; do
        if [ -e "$out/$f" ]; then
            echo "make-certs.sh: $out/$f exists; use --force to replace the whole set" >&2
            exit 1
        fi
    done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
umask 077

# 32 random bytes, hex: the passphrase `configure` generates. Passed to openssl through the
# environment, never on a command line (where ps would show it).
FLUENTD_KEY_PASSPHRASE=$(openssl rand -hex 32)
export FLUENTD_KEY_PASSPHRASE

serial() { echo "0x$(openssl rand -hex 16)"; }

cat >"$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = $san
authorityKeyIdentifier = keyid
EOF

echo "making a $bits-bit CA, server and client certificate for $san in $out" >&2
openssl genrsa -traditional -out "$work/ca.key" "$bits" 2>/dev/null
openssl req -x509 -new -key "$work/ca.key" -subj /CN=CA -config "$work/openssl.cnf" \
    -extensions ca -days 3650 -set_serial "$(serial)" -out "$work/ca.crt"

# The server key is written encrypted straight away: no plain copy ever touches the disk.
openssl genrsa -traditional -aes256 -passout env:FLUENTD_KEY_PASSPHRASE \
    -out "$work/server.key" "$bits" 2>/dev/null
openssl req -new -key "$work/server.key" -passin env:FLUENTD_KEY_PASSPHRASE -subj /CN=Server \
    -config "$work/openssl.cnf" -out "$work/server.csr"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -set_serial "$(serial)" -days 3650 -extfile "$work/openssl.cnf" -extensions server \
    -out "$work/server.crt" 2>/dev/null

openssl genrsa -traditional -out "$work/client.key" "$bits" 2>/dev/null
openssl req -new -key "$work/client.key" -subj /CN=Client -config "$work/openssl.cnf" \
    -out "$work/client.csr"
openssl x509 -req -in "$work/client.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -set_serial "$(serial)" -days 3650 -extfile "$work/openssl.cnf" -extensions client \
    -out "$work/client.crt" 2>/dev/null

# Check the set before handing it out: both leaves chain to the CA for their purpose.
openssl verify -CAfile "$work/ca.crt" -purpose sslserver "$work/server.crt" >/dev/null
openssl verify -CAfile "$work/ca.crt" -purpose sslclient "$work/client.crt" >/dev/null

# The digest signing key is encrypted with the same passphrase, for the same reason.
openssl genpkey -algorithm ed25519 -aes-256-cbc -pass env:FLUENTD_KEY_PASSPHRASE \
    -out "$work/digest.key"
openssl pkey -in "$work/digest.key" -passin env:FLUENTD_KEY_PASSPHRASE -pubout \
    -out "$work/digest.pub"

for f in ca.crt ca.key server.crt server.key client.crt client.key digest.key digest.pub; do
    cp "$work/$f" "$out/$f"
done
# Certificates are public. ca.key and client.key stay private to you. server.key and
# digest.key are readable by all: they are encrypted, and weir runs as uid 999 in the image,
# so a bind-mounted 0600 file
# owned by you would be unreadable to it (in Kubernetes the Secret's defaultMode and fsGroup
# take care of this instead; see ../kubernetes).
# The folder too: created with the caller's umask (0700 under umask 077), it would keep uid
# 999 out of every file in it. Read and search for all are added, nothing is taken away.
chmod 0644 "$out/ca.crt" "$out/server.crt" "$out/client.crt" "$out/server.key"
chmod 0644 "$out/digest.key" "$out/digest.pub"
chmod 0600 "$out/ca.key" "$out/client.key"
chmod a+rx "$out"

cat >&2 <<EOF
wrote $out/{ca,server,client}.{crt,key} and $out/digest.{key,pub}
server.key is encrypted; give weir its passphrase in FLUENTD_KEY_PASSPHRASE (printed on
stdout). Keep ca.key offline: it is only needed to make more certificates.
EOF
echo "FLUENTD_KEY_PASSPHRASE=$FLUENTD_KEY_PASSPHRASE"
