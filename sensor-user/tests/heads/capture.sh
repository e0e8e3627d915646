#!/usr/bin/env bash
# Captures real request heads into this directory: what an upstream (Synapse's place)
# receives from Debian's nginx with Synapse's documented reverse-proxy configuration, and
# from clients talking to it directly. Run as root from the repository root:
#   bash sensor-user/tests/heads/capture.sh
# Needs nginx, curl, wget and python3 (with `requests`, optional). The tokens are made up,
# built the way Synapse builds them (see tests/src/lib.rs `synapse_token`).
set -euo pipefail
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'kill $(cat "$work"/pids) 2>/dev/null || true; rm -rf "$work"' EXIT

# An upstream that writes each request head it receives to a file and answers 200.
cat > "$work/dump.py" <<'PY'
import socket, sys, threading
out, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port)); srv.listen(16)
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d: return
        buf += d
    head = buf[: buf.index(b"\r\n\r\n") + 4]
    name = head.split(b"\r\n")[0].split(b" ")[1].split(b"name=")[-1].split(b"&")[0].decode()
    open(f"{out}/{name}.http", "wb").write(head)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    c.close()
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,)).start()
PY
python3 "$work/dump.py" "$out" 18321 & echo $! >> "$work/pids"

cat > "$work/nginx.conf" <<NGX
daemon off; master_process off; pid $work/nginx.pid; error_log $work/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $work; proxy_temp_path $work;
  fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server {
    listen 127.0.0.1:18322;
    server_name matrix.example.org;
    location ~ ^(/_matrix|/_synapse/client) {
      proxy_pass http://localhost:18321;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header Host \$host:\$server_port;
      client_max_body_size 50M;
      proxy_http_version 1.1;
    }
  }
}
NGX
nginx -c "$work/nginx.conf" & echo $! >> "$work/pids"
sleep 1

TOKEN=$(python3 - <<'PY'
import base64, zlib
def b62(n):
    a = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"; s = ""
    while n: n, r = divmod(n, 62); s = a[r] + s
    return s.rjust(6, "0")
base = "syt_" + base64.b64encode(b"alice").decode().rstrip("=") + "_qWkcnDhFoCFbYgMTpbRk"
print(base + "_" + b62(zlib.crc32(base.encode())))
PY
)
proxy=http://127.0.0.1:18322
direct=http://127.0.0.1:18321
room='%21OGEhHVWSdvArJzumhm%3Aexample.org'
# curl through nginx: sync with a token in the header.
curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "$proxy/_matrix/client/v3/sync?timeout=30000&since=s72594_4483_1934&name=nginx-curl-sync"
# curl through nginx: messages, token in the query string (older clients).
curl -s -o /dev/null "$proxy/_matrix/client/v3/rooms/$room/messages?dir=b&limit=100&access_token=$TOKEN&name=nginx-curl-messages-query-token"
# wget through nginx, no token: a legacy media download.
wget -q -O /dev/null "$proxy/_matrix/media/v3/download/example.org/AbCdEf123?name=nginx-wget-media"
# python-requests through nginx: a JSON POST (its body never reaches the head).
python3 - "$proxy" "$TOKEN" <<'PY' || true
import sys, requests
requests.post(sys.argv[1] + "/_matrix/client/v3/user_directory/search?name=nginx-requests-directory",
              json={"search_term": "a", "limit": 50}, headers={"Authorization": "Bearer " + sys.argv[2]})
PY
# A browser-like head through nginx: the headers Chromium sends for Element Web's fetches.
curl -s -o /dev/null "$proxy/_matrix/client/v3/rooms/$room/members?name=nginx-browser-members" \
  -H "Authorization: Bearer $TOKEN" \
  -H 'sec-ch-ua: "Chromium";v="156", "Not-A.Brand";v="24"' -H 'sec-ch-ua-mobile: ?0' \
  -H 'sec-ch-ua-platform: "Linux"' \
  -H 'User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36' \
  -H 'Accept: application/json' -H 'Origin: https://app.element.io' -H 'Sec-Fetch-Site: cross-site' \
  -H 'Sec-Fetch-Mode: cors' -H 'Sec-Fetch-Dest: empty' -H 'Referer: https://app.element.io/' \
  -H 'Accept-Encoding: gzip, deflate, br, zstd' -H 'Accept-Language: fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7' \
  -H 'Priority: u=1, i'
# Direct clients (no proxy): curl with a forged X-Forwarded-For, python-requests keep-alive.
curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -H "X-Forwarded-For: 203.0.113.66" \
  "$direct/_matrix/client/v3/publicRooms?limit=20&name=direct-curl-forged-xff"
python3 - "$direct" "$TOKEN" <<'PY' || true
import sys, requests
requests.get(sys.argv[1] + "/_matrix/client/v1/media/thumbnail/example.org/XyZ?width=96&height=96&method=crop&name=direct-requests-thumbnail",
             headers={"Authorization": "Bearer " + sys.argv[2]})
PY
ls -l "$out"/*.http
