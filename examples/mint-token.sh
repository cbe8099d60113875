#!/usr/bin/env bash
# Mints a wsgate JWT with openssl alone (no libraries).
#
#   examples/mint-token.sh hs256 SECRET   SUB [ROOMS] [TTL_SECONDS]
#   examples/mint-token.sh rs256 KEY.pem  SUB [ROOMS] [TTL_SECONDS]
#
# ROOMS is a comma-separated list of room patterns (the `rooms` claim; default
# "chat:*"); TTL defaults to 3600. Extra claims can be added as JSON with
# EXTRA_CLAIMS='"send":true,"aud":"chat"'. KID sets the header's `kid`.
#
# HS256: start wsgate with --jwt-secret SECRET.
# RS256: make a key pair, give wsgate the public half:
#   openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out key.pem
#   openssl pkey -in key.pem -pubout -out key.pub.pem
#   wsgate --jwt-public-key-file key.pub.pem ...
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
alg="$1" key="$2" sub="$3" rooms="${4:-chat:*}" ttl="${5:-3600}"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }

now=$(date +%s)
room_list=""
IFS=',' read -ra patterns <<<"$rooms"
for pattern in "${patterns[@]}"; do
  room_list+="${room_list:+,}$(json_string "$pattern")"
done
claims="{\"sub\":$(json_string "$sub"),\"iat\":$now,\"exp\":$((now + ttl)),\"rooms\":[$room_list]${EXTRA_CLAIMS:+,$EXTRA_CLAIMS}}"

case "$alg" in
  hs256 | HS256) header='{"alg":"HS256","typ":"JWT"' ;;
  rs256 | RS256) header='{"alg":"RS256","typ":"JWT"' ;;
  *) echo "unknown algorithm $alg: hs256 or rs256" >&2; exit 2 ;;
esac
header+="${KID:+,\"kid\":$(json_string "$KID")}}"

signing_input="$(printf '%s' "$header" | b64url).$(printf '%s' "$claims" | b64url)"
case "$alg" in
  hs256 | HS256) signature=$(printf '%s' "$signing_input" | openssl dgst -sha256 -hmac "$key" -binary | b64url) ;;
  rs256 | RS256) signature=$(printf '%s' "$signing_input" | openssl dgst -sha256 -sign "$key" -binary | b64url) ;;
esac
printf '%s.%s\n' "$signing_input" "$signature"
