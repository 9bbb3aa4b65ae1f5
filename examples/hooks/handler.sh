#!/bin/busybox sh
# One HTTP exchange on stdin/stdout. State lives in /tmp: memory on the default read-only root,
# emptied by a restart; on the instance's own layer (kept across a restart) with
# `"read_only_root_fs": false`.
read -r method path _
request_id=""
while read -r line; do
    line=$(printf '%s' "$line" | tr -d '\r')
    [ -z "$line" ] && break
    case "$line" in
        [Xx]-[Ff][Cc]-[Rr][Ee][Qq][Uu][Ee][Ss][Tt]-[Ii][Dd]:*) request_id=${line#*:} ;;
    esac
done
request_id=${request_id# }

respond() {
    printf 'HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
        "$1" "${#2}" "$2"
}

case "$method $path" in
    "POST /initialize")
        calls=$(($(cat /tmp/initialize-calls 2>/dev/null || echo 0) + 1))
        echo "$calls" > /tmp/initialize-calls
        if [ "$calls" -le "${INIT_FAILURES:-0}" ]; then
            respond "${INIT_FAILURE_STATUS:-404} Not Ready" "not ready (call $calls, request $request_id)"
        else
            touch /tmp/initialized
            respond "200 OK" "initialized on call $calls (request $request_id)"
        fi
        ;;
    "GET /pre-stop")
        respond "200 OK" "pre-stop (request $request_id)"
        ;;
    *)
        if [ -f /tmp/initialized ]; then
            respond "200 OK" "ready (request $request_id)"
        else
            respond "200 OK" "not initialized (request $request_id)"
        fi
        ;;
esac
