#!/bin/busybox sh
# The request line and headers, unchanged, as the body of a 200 answer.
received=
while IFS= read -r line; do
    line=$(printf '%s' "$line" | tr -d '\r')
    received="$received$line
"
    [ -z "$line" ] && break
done
printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: tenant=1; Path=/\r\nX-Hop: drop-me\r\nConnection: close, X-Hop\r\nContent-Length: %s\r\n\r\n%s' \
    "${#received}" "$received"
