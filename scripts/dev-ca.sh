#!/usr/bin/env bash
# Development PKI for Ck and ETSI 014: a CA, the controller, KMs and SAEs (openssl CLI).
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: scripts/dev-ca.sh [--topology FILE] [--km ID]... [--sae ID]... [--controller-id ID]
                         [--days N] OUTDIR

Creates (once; existing files are kept, so it is idempotent, unless a certificate lacks its role
URI: such certificates of older versions are renewed) under OUTDIR one certificate per role. Each role has its own SAN URI scheme and extended key usage, so a certificate issued for
one role is refused in every other (see base/net/include/qkdn/net/tls.hpp):
  ca.pem, ca.key                 development CA (EC P-256)
  controller.pem, controller.key CN=<controller-id>, SAN URI:urn:qkdn:controller:<controller-id>,
                                 DNS:localhost, IP:127.0.0.1; EKU serverAuth, clientAuth (Cxi
                                 dials peer controllers, docs/cxi.md). Agents pin it
                                 (qkdn-agent --controller-id, default qkdn-controller); also
                                 fits the API's HTTPS (--api-tls-cert)
  etsi.pem, etsi.key             CN=qkdn-etsi, SAN URI:urn:qkdn:etsi:qkdn-etsi, DNS:localhost,
                                 IP:127.0.0.1; EKU serverAuth: the agent's ETSI GS QKD 014
                                 listener (--etsi-cert/--etsi-key)
  km/<km_id>.pem, .key           CN=<km_id>, SAN URI:urn:qkdn:km:<km_id>; EKU serverAuth and
                                 clientAuth (Ck client, KMA links both ways)
  sae/<sae_id>.pem, .key         CN=<sae_id>, SAN URI:urn:qkdn:sae:<sae_id>; EKU clientAuth: an
                                 SAE calling ETSI GS QKD 014 with mutual TLS
KMs and SAEs come from --km/--sae and from a topology document (kms[].km_id,
applications[].sae_id). Development only: keys are unencrypted.

Examples:
  scripts/dev-ca.sh --topology tests/data/topologies/tokyo-qkd.json pki/
  scripts/dev-ca.sh --km KM1 --km KM2 --sae SAE-A --controller-id ctl-1 /tmp/pki
TXT
}

kms=()
saes=()
topology=""
days=825
controller_id="qkdn-controller"
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --topology) topology="${2:?--topology needs a file}"; shift 2 ;;
    --km) kms+=("${2:?--km needs an id}"); shift 2 ;;
    --sae) saes+=("${2:?--sae needs an id}"); shift 2 ;;
    --days) days="${2:?--days needs a number}"; shift 2 ;;
    --controller-id) controller_id="${2:?--controller-id needs an id}"; shift 2 ;;
    -*) echo "dev-ca.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "dev-ca.sh: one OUTDIR only" >&2; exit 2; }; out="$1"; shift ;;
  esac
done
[ -n "$out" ] || { echo "dev-ca.sh: OUTDIR is required (see --help)" >&2; exit 2; }
command -v openssl >/dev/null || { echo "dev-ca.sh: openssl not found" >&2; exit 1; }

valid_id() { [[ "$1" =~ ^[A-Za-z0-9._:-]{1,128}$ ]]; }

if [ -n "$topology" ]; then
  [ -r "$topology" ] || { echo "dev-ca.sh: cannot read topology '$topology'" >&2; exit 1; }
  mapfile -t tkms < <(python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
print("\n".join(k["km_id"] for k in d.get("kms",[])))' "$topology")
  mapfile -t tsaes < <(python3 -c 'import json,sys
d=json.load(open(sys.argv[1]))
print("\n".join(a["sae_id"] for a in d.get("applications",[])))' "$topology")
  for k in "${tkms[@]}"; do [ -n "$k" ] && kms+=("$k"); done
  for s in "${tsaes[@]}"; do [ -n "$s" ] && saes+=("$s"); done
fi

mkdir -p "$out/km" "$out/sae"
umask 077

if [ ! -s "$out/ca.pem" ] || [ ! -s "$out/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -keyout "$out/ca.key" -out "$out/ca.pem" -subj "/CN=qkdn-dev-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  echo "dev-ca.sh: created $out/ca.pem"
fi

# issue NAME_PATH CN ROLE_URI EXTENSIONS: kept when it exists and already names ROLE_URI (older
# versions of this script issued certificates without role URIs: those are renewed).
issue() {
  local base="$1" cn="$2" uri="$3" ext="$4"
  if [ -s "$base.pem" ] && [ -s "$base.key" ] &&
    openssl x509 -in "$base.pem" -noout -ext subjectAltName 2>/dev/null | tr ',' '\n' |
    sed 's/^ *//' | grep -qxF "URI:$uri"; then
    return 0
  fi
  local extfile
  extfile=$(mktemp)
  printf '%s\n' "$ext" >"$extfile"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$base.key" \
    -out "$base.csr" -subj "/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$base.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -out "$base.pem" -extfile "$extfile" 2>/dev/null
  rm -f "$base.csr" "$extfile"
  echo "dev-ca.sh: created $base.pem (CN=$cn)"
}

valid_id "$controller_id" || { echo "dev-ca.sh: bad controller id '$controller_id'" >&2; exit 2; }
issue "$out/controller" "$controller_id" "urn:qkdn:controller:$controller_id" \
  "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=URI:urn:qkdn:controller:$controller_id,DNS:localhost,IP:127.0.0.1"

issue "$out/etsi" "qkdn-etsi" "urn:qkdn:etsi:qkdn-etsi" \
  "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=URI:urn:qkdn:etsi:qkdn-etsi,DNS:localhost,IP:127.0.0.1"

for k in "${kms[@]}"; do
  valid_id "$k" || { echo "dev-ca.sh: bad KM id '$k'" >&2; exit 2; }
  issue "$out/km/$k" "$k" "urn:qkdn:km:$k" \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=URI:urn:qkdn:km:$k,DNS:localhost,IP:127.0.0.1"
done

for s in "${saes[@]}"; do
  valid_id "$s" || { echo "dev-ca.sh: bad SAE id '$s'" >&2; exit 2; }
  issue "$out/sae/$s" "$s" "urn:qkdn:sae:$s" \
    "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=URI:urn:qkdn:sae:$s"
done
