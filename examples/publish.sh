#!/usr/bin/env bash
# Publishing from a backend: the HTTP API on wsgate's admin listener, with curl.
#
#   WSGATE_ADMIN=http://127.0.0.1:9090 WSGATE_API_KEY=k1 examples/publish.sh publish chat:lobby '{"text":"hi"}'
#   examples/publish.sh send alice '"a direct message"'        # to every connection of a user
#   examples/publish.sh presence chat:lobby                     # who is in the room
#   examples/publish.sh history chat:lobby EPOCH SEQ            # what came after SEQ (rooms with history)
#   examples/publish.sh stats                                   # connections and rooms per node
#
# WSGATE_ADMIN defaults to http://127.0.0.1:8080 (the single-node default, where
# the API shares the public listener); WSGATE_API_KEY to k1 (start wsgate with
# --api-keys k1). DATA is any JSON value. Prints the JSON answer; exits non-zero
# on an HTTP error, after printing its {"error":{...}} body.
set -euo pipefail
admin="${WSGATE_ADMIN:-http://127.0.0.1:8080}"
key="${WSGATE_API_KEY:-k1}"

api() { # METHOD PATH [BODY]
  local args=(--silent --show-error --fail-with-body -H "Authorization: Bearer $key" -X "$1")
  if [ $# -ge 3 ]; then args+=(-H 'Content-Type: application/json' --data-binary "$3"); fi
  curl "${args[@]}" "$admin/api/v1$2"
  echo
}
json() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
enc() { printf '%s' "$1" | sed 's/:/%3A/g; s/@/%40/g; s/+/%2B/g; s/=/%3D/g'; }

case "${1:-}" in
  publish) api POST /publish "{\"room\":$(json "$2"),\"data\":${3:-null}}" ;;
  send) api POST /send "{\"user\":$(json "$2"),\"data\":${3:-null}}" ;;
  send-conn) api POST /send "{\"conn\":$(json "$2"),\"data\":${3:-null}}" ;;
  disconnect) api POST /disconnect "{\"user\":$(json "$2")}" ;;
  presence) api GET "/rooms/$(enc "$2")/presence" ;;
  history) api GET "/rooms/$(enc "$2")/history?epoch=$(enc "$3")&since=${4:-0}" ;;
  stats) api GET /stats ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
