#!/usr/bin/env python3
"""Seeds the test homeserver of tests/src/homeserver.rs over plain HTTP (stdlib only).

Two phases, with a Synapse restart in between:

  seed.py legacy BASE_URL SECRET STATE_FILE
      Synapse runs with `enable_authenticated_media: false`. Registers every user (the
      admin through the shared-secret admin API), logs each one in, and uploads the
      "legacy" media. Writes what it made to STATE_FILE.

  seed.py main BASE_URL SECRET STATE_FILE
      Synapse runs with `enable_authenticated_media: true` (the default). Uploads the
      other media, creates the rooms (public ones published to the directory, one
      invite-only room the scraper is not in), joins the members, sends the history
      (text messages of varied sizes and m.image/m.file events) and prints one JSON
      document with everything the Rust side needs.

Media uploaded in the first phase stays downloadable without a token on
/_matrix/media/v3/download after the restart; media of the second phase does not.

Everything is deterministic (a fixed random seed), except what Synapse makes: ids and
access tokens. Errors end the script with a message naming the request that failed.
"""

import hashlib
import hmac
import json
import random
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor

SERVER_NAME = "test.example"

# (localpart, role). Roles: admin (server admin), scraper (the account a scraping test
# drives), benign (ordinary users a test drives), member (room members only).
USERS = [
    ("admin", "admin"),
    ("scraper", "scraper"),
    ("alice", "benign"),
    ("bob", "benign"),
    ("carol", "benign"),
    ("dave", "member"),
    ("erin", "member"),
    ("frank", "member"),
    ("grace", "member"),
    ("heidi", "member"),
]

# (alias localpart, name, history_visibility, creator, other members, text messages).
# The scraper is in none of them: a scraping test joins (or peeks into the
# world-readable ones) itself. "shared" history is readable by anyone who joins.
PUBLIC_ROOMS = [
    ("lobby", "Lobby", "world_readable", "alice", ["bob", "carol", "dave", "erin", "frank", "admin"], 140),
    ("rust", "Rust programming", "shared", "bob", ["alice", "grace", "heidi"], 110),
    ("synapse-admins", "Synapse admins", "shared", "admin", ["alice", "carol", "dave"], 75),
    ("photos", "Photos", "shared", "carol", ["alice", "bob", "erin", "grace"], 60),
    ("music", "Music", "world_readable", "dave", ["carol", "frank", "heidi"], 95),
    ("gardening", "Gardening", "shared", "erin", ["alice", "grace"], 65),
    ("offtopic", "Off-topic", "shared", "frank", ["alice", "bob", "carol", "dave", "erin", "heidi"], 120),
    ("announcements", "Announcements", "shared", "admin", ["alice", "bob", "carol", "frank", "grace"], 62),
]
# Invite-only, not published, no alias; the scraper is not invited.
PRIVATE_ROOM = ("staff", "Staff (private)", "shared", "admin", ["bob", "carol"], 45)

KIB = 1024
MIB = 1024 * KIB
# (name, size, kind, legacy, room alias it is posted in or None). "image" media are real
# PNG files (Synapse thumbnails them), "file" media are random bytes.
MEDIA = [
    ("legacy-note.bin", 1 * KIB, "file", True, "lobby"),
    ("legacy-photo.png", 64 * KIB, "image", True, "photos"),
    ("legacy-slides.bin", 1 * MIB, "file", True, "synapse-admins"),
    ("legacy-archive.bin", 8 * MIB, "file", True, None),
    ("avatar.png", 1 * KIB, "image", False, "photos"),
    ("holiday.png", 1 * MIB, "image", False, "photos"),
    ("notes.bin", 64 * KIB, "file", False, "rust"),
    ("backup.bin", 8 * MIB, "file", False, "offtopic"),
    ("video.bin", 24 * MIB, "file", False, "music"),
    ("unposted.bin", 64 * KIB, "file", False, None),
]

RNG_SEED = 20240611
WORDS = (
    "matrix synapse room event federation key device token media upload download "
    "sync presence typing receipt alias directory public private history state "
    "server client proxy nginx python rust kernel socket packet bytes request reply "
    "garden tomato music guitar photo camera lens holiday mountain river coffee tea "
    "the a of and to in is it that for on with as at by from this be are was"
).split()


def password_of(localpart):
    return f"{localpart}-test-password"


class Api:
    """Plain HTTP to Synapse, one connection per request."""

    def __init__(self, base):
        self.base = base.rstrip("/")

    def call(self, method, path, token=None, body=None, raw=None, content_type=None):
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
            headers["Content-Type"] = content_type or "application/octet-stream"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
        for attempt in range(5):
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    return json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as e:
                text = e.read().decode(errors="replace")
                # Rate limits are relaxed in the test config; retry anyway if one hits.
                if e.code == 429 and attempt < 4:
                    time.sleep(0.2)
                    continue
                raise SystemExit(f"seed: {method} {path} -> HTTP {e.code}: {text}") from None
            except urllib.error.URLError as e:
                raise SystemExit(f"seed: {method} {path} -> {e.reason}") from None
        raise SystemExit(f"seed: {method} {path}: still rate limited")


def register(api, secret, localpart, admin):
    nonce = api.call("GET", "/_synapse/admin/v1/register")["nonce"]
    password = password_of(localpart)
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    for part in (nonce.encode(), localpart.encode(), password.encode()):
        mac.update(part)
        mac.update(b"\x00")
    mac.update(b"admin" if admin else b"notadmin")
    api.call(
        "POST",
        "/_synapse/admin/v1/register",
        body={
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "displayname": localpart.capitalize(),
            "mac": mac.hexdigest(),
        },
    )


def login(api, localpart, device_id):
    r = api.call(
        "POST",
        "/_matrix/client/v3/login",
        body={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": password_of(localpart),
            "device_id": device_id,
            "initial_device_display_name": f"seed {device_id}",
        },
    )
    return r["access_token"], r["device_id"]


def png_of_size(size, rng):
    """A valid 64x48 RGB PNG of exactly `size` bytes, padded with a private ancillary
    chunk (`hsPd`: ancillary, private, reserved bit clear, safe to copy) that decoders
    skip."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # A colour gradient, written with PNG's "Sub" row filter (type 1: each byte is the
    # difference from the pixel to its left), so it compresses to almost nothing and even
    # 1 KiB is enough.
    w, h = 64, 48
    base = rng.randrange(256)
    rows = b"".join(b"\x01" + bytes((base, 5 * y % 256, 128)) + b"\x04\x00\x00" * (w - 1) for y in range(h))
    head = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    head += chunk(b"IDAT", zlib.compress(rows, 9))
    tail = chunk(b"IEND", b"")
    pad = size - len(head) - len(tail) - 12
    if pad < 0:
        raise SystemExit(f"seed: a PNG cannot be as small as {size} bytes")
    return head + chunk(b"hsPd", rng.randbytes(pad)) + tail


def upload(api, token, name, size, kind, rng):
    if kind == "image":
        data, content_type = png_of_size(size, rng), "image/png"
    else:
        data, content_type = rng.randbytes(size), "application/octet-stream"
    assert len(data) == size
    q = urllib.parse.urlencode({"filename": name})
    r = api.call("POST", f"/_matrix/media/v3/upload?{q}", token=token, raw=data, content_type=content_type)
    mxc = r["content_uri"]
    return {
        "name": name,
        "mxc": mxc,
        "media_id": mxc.rsplit("/", 1)[1],
        "size": size,
        "content_type": content_type,
        "kind": kind,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def text_of(rng):
    """A message body: mostly short, some paragraphs, a few long posts (up to 24 KiB)."""
    r = rng.random()
    if r < 0.70:
        n = rng.randrange(2, 30)
    elif r < 0.90:
        n = rng.randrange(30, 300)
    elif r < 0.98:
        n = rng.randrange(300, 1200)
    else:
        n = rng.randrange(2000, 4000)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def phase_legacy(api, secret, state_path):
    t0 = time.monotonic()
    rng = random.Random(RNG_SEED)
    users = {}
    for localpart, role in USERS:
        register(api, secret, localpart, admin=(role == "admin"))
        token, device = login(api, localpart, f"{localpart.upper()}DEV")
        users[localpart] = {
            "localpart": localpart,
            "user_id": f"@{localpart}:{SERVER_NAME}",
            "password": password_of(localpart),
            "access_token": token,
            "device_id": device,
            "role": role,
            "admin": role == "admin",
        }
    media = []
    for i, (name, size, kind, legacy, room) in enumerate(MEDIA):
        if not legacy:
            continue
        uploader = USERS[2 + i % 3][0]
        m = upload(api, users[uploader]["access_token"], name, size, kind, rng)
        m.update(legacy=True, uploader=users[uploader]["user_id"], room=room)
        media.append(m)
    state = {"users": users, "media": media, "legacy_seconds": time.monotonic() - t0}
    with open(state_path, "w") as f:
        json.dump(state, f)


def send(api, token, room_id, txn, content):
    path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/{txn}"
    return api.call("PUT", path, token=token, body=content)["event_id"]


def fill_room(api, users, spec, index, media_here):
    """Sends a room's history: its text messages, with its media events spread among
    them. Returns the number of m.room.message events sent."""
    alias, _name, _vis, creator, members, texts, room_id = spec
    rng = random.Random(RNG_SEED + 1000 + index)
    senders = [creator] + members
    # Media events at evenly spread positions.
    slots = {(k + 1) * texts // (len(media_here) + 1): m for k, m in enumerate(media_here)}
    sent = 0
    for i in range(texts):
        if i in slots:
            m = slots.pop(i)
            sender = users[creator]
            msgtype = "m.image" if m["kind"] == "image" else "m.file"
            content = {
                "msgtype": msgtype,
                "body": m["name"],
                "url": m["mxc"],
                "info": {"size": m["size"], "mimetype": m["content_type"]},
            }
            if msgtype == "m.image":
                content["info"].update(w=64, h=48)
            m["event_id"] = send(api, sender["access_token"], room_id, f"seed-{index}-media-{i}", content)
            m["room_id"] = room_id
            sent += 1
        sender = users[senders[i % len(senders)] if rng.random() < 0.6 else rng.choice(senders)]
        send(api, sender["access_token"], room_id, f"seed-{index}-text-{i}", {"msgtype": "m.text", "body": text_of(rng)})
        sent += 1
    return sent


def create_room(api, users, spec, public):
    alias, name, visibility, creator, members, _texts = spec
    body = {
        "name": name,
        "topic": f"Seeded test room {name}",
        "preset": "public_chat" if public else "private_chat",
        "visibility": "public" if public else "private",
        "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": visibility}}
        ],
    }
    if public:
        body["room_alias_name"] = alias
    else:
        body["invite"] = [users[m]["user_id"] for m in members]
    room_id = api.call("POST", "/_matrix/client/v3/createRoom", token=users[creator]["access_token"], body=body)["room_id"]
    for m in members:
        api.call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}", token=users[m]["access_token"], body={})
    return room_id


def phase_main(api, state_path):
    t0 = time.monotonic()
    with open(state_path) as f:
        state = json.load(f)
    users = state["users"]
    media = state["media"]
    rng = random.Random(RNG_SEED + 1)
    for i, (name, size, kind, legacy, room) in enumerate(MEDIA):
        if legacy:
            continue
        uploader = USERS[2 + i % 3][0]
        m = upload(api, users[uploader]["access_token"], name, size, kind, rng)
        m.update(legacy=False, uploader=users[uploader]["user_id"], room=room)
        media.append(m)

    specs = [(*s, create_room(api, users, s, True)) for s in PUBLIC_ROOMS]
    private = (*PRIVATE_ROOM, create_room(api, users, PRIVATE_ROOM, False))
    all_specs = specs + [private]

    # One thread per room: Synapse persists events of different rooms concurrently.
    with ThreadPoolExecutor(max_workers=len(all_specs)) as pool:
        futures = [
            pool.submit(
                fill_room,
                api,
                users,
                spec,
                index,
                [m for m in media if m["room"] == spec[0]],
            )
            for index, spec in enumerate(all_specs)
        ]
        counts = [f.result() for f in futures]

    rooms = []
    for spec, count in zip(all_specs, counts):
        alias, name, visibility, creator, members, _texts, room_id = spec
        public = spec in specs
        rooms.append(
            {
                "room_id": room_id,
                "alias": f"#{alias}:{SERVER_NAME}" if public else None,
                "name": name,
                "is_public": public,
                "history_visibility": visibility,
                "creator": users[creator]["user_id"],
                "members": [users[u]["user_id"] for u in [creator] + members],
                "messages": count,
            }
        )
    for m in media:
        m.pop("room", None)
        m.setdefault("room_id", None)
        m.setdefault("event_id", None)
    print(
        json.dumps(
            {
                "server_name": SERVER_NAME,
                "users": list(users.values()),
                "rooms": rooms,
                "media": media,
                "legacy_seconds": state["legacy_seconds"],
                "main_seconds": time.monotonic() - t0,
            }
        )
    )


def main():
    if len(sys.argv) != 5 or sys.argv[1] not in ("legacy", "main"):
        raise SystemExit(__doc__)
    phase, base, secret, state_path = sys.argv[1:]
    api = Api(base)
    if phase == "legacy":
        phase_legacy(api, secret, state_path)
    else:
        phase_main(api, state_path)


if __name__ == "__main__":
    main()
