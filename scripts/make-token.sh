#!/bin/sh
# Makes a northbound API bearer token.
#   scripts/make-token.sh NAME ROLE
# Prints the token (give it to the client; it is not stored anywhere) and the line to append to
# the tokens file passed with --api-tokens (NAME ROLE SHA256-HEX). ROLE is viewer or admin.
set -eu
if [ $# -ne 2 ]; then
  echo "usage: $0 NAME ROLE   (ROLE: viewer | admin)" >&2
  exit 2
fi
name=$1
role=$2
case $role in viewer | admin) ;; *)
  echo "$0: ROLE must be viewer or admin, got '$role'" >&2
  exit 2
  ;;
esac
if ! printf %s "$name" | grep -Eq '^[A-Za-z0-9._@-]{1,64}$'; then
  echo "$0: NAME must be 1..64 of [A-Za-z0-9._@-]" >&2
  exit 2
fi
token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
hash=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
echo "token: $token"
echo "tokens file line:"
echo "$name $role $hash"
