#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/TARGET/: small, real-looking
inputs (docs/fuzzing.md). Run from anywhere: python3 fuzz/seeds.py. Needs the zstd command."""

import base64
import gzip
import io
import json
import os
import struct
import subprocess
import tarfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
HEX = "b5a1f3c2" * 8


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- layers: a tar with a directory, files, links, a whiteout, an opaque dir and PAX records
def layer_tar(fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        def add(name, kind, data=b"", **kw):
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mtime = 1700000000
            ti.mode = kw.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            for k, v in kw.items():
                setattr(ti, k, v)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data else None)

        add("etc/", tarfile.DIRTYPE)
        add("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\n", uid=0, gid=0)
        add("bin/", tarfile.DIRTYPE)
        add("bin/busybox", tarfile.REGTYPE, b"\x7fELF" + b"\0" * 60, mode=0o4755)
        add("bin/sh", tarfile.SYMTYPE, linkname="busybox")
        add("bin/ls", tarfile.LNKTYPE, linkname="bin/busybox")
        add("var/", tarfile.DIRTYPE)
        add("var/cache/", tarfile.DIRTYPE)
        add("var/cache/.wh..wh..opq", tarfile.REGTYPE)
        add("etc/.wh.motd", tarfile.REGTYPE)
        add("tmp/", tarfile.DIRTYPE, mode=0o1777)
        add("run/fifo", tarfile.FIFOTYPE)
        if fmt == tarfile.PAX_FORMAT:
            add("home/app/", tarfile.DIRTYPE, uid=1000, gid=1000,
                pax_headers={"SCHILY.xattr.user.note": "hello", "mtime": "1700000000.5"})
            add("home/app/long-" + "n" * 120, tarfile.REGTYPE, b"x")
    return buf.getvalue()


def unpack_seeds():
    pax = layer_tar()
    write("unpack", "layer.tar", pax)
    write("unpack", "layer-gnu.tar", layer_tar(tarfile.GNU_FORMAT))
    write("unpack", "layer.tar.gz", gzip.compress(pax, 9, mtime=0))
    z = subprocess.run(["zstd", "-q", "-19", "-c"], input=pax, stdout=subprocess.PIPE, check=True)
    write("unpack", "layer.tar.zst", z.stdout)
    # Two gzip members back to back, as some layer builders write them.
    write("unpack", "multi-member.tar.gz",
          gzip.compress(pax[:512], mtime=0) + gzip.compress(pax[512:], mtime=0))


# ---- image references
def reference_seeds():
    refs = [
        "busybox",
        "library/busybox:1.36",
        "docker.io/library/busybox:latest",
        "registry.k8s.io/pause:3.10",
        "localhost:5000/team/app/web:v1.2.3-rc.1",
        "127.0.0.1:5000/busybox@sha256:" + HEX,
        "quay.io/org/repo:tag@sha256:" + HEX,
        "[::1]:5000/a_b/c.d--e:latest",
        "sha256:" + HEX,
    ]
    for i, r in enumerate(refs):
        write("reference", f"ref{i}", r)


# ---- manifests, indexes and configs; the first byte picks the Content-Type (see the target)
def manifest_seeds():
    def desc(mt, size, **kw):
        d = {"mediaType": mt, "digest": "sha256:" + HEX, "size": size}
        d.update(kw)
        return d

    docker = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": desc("application/vnd.docker.container.image.v1+json", 1457),
        "layers": [desc("application/vnd.docker.image.rootfs.diff.tar.gzip", 2155034)],
    }
    oci = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": desc("application/vnd.oci.image.config.v1+json", 581),
        "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", 3623807),
                   desc("application/vnd.oci.image.layer.v1.tar+zstd", 1024)],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"},
    }
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            desc("application/vnd.oci.image.manifest.v1+json", 480,
                 platform={"architecture": "amd64", "os": "linux"}),
            desc("application/vnd.oci.image.manifest.v1+json", 480,
                 platform={"architecture": "arm64", "os": "linux", "variant": "v8"}),
            desc("application/vnd.oci.image.manifest.v1+json", 566,
                 platform={"architecture": "unknown", "os": "unknown"},
                 annotations={"vnd.docker.reference.type": "attestation-manifest"}),
        ],
    }
    dlist = dict(index, mediaType="application/vnd.docker.distribution.manifest.list.v2+json")
    config = {
        "architecture": "amd64", "os": "linux",
        "config": {"User": "1000:1000", "Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + HEX]},
    }
    schema1 = {"schemaVersion": 1, "name": "x", "tag": "latest", "fsLayers": []}
    for i, (ct, doc) in enumerate([(5, docker), (3, oci), (2, index), (4, dlist), (0, oci),
                                   (1, index), (0, config), (6, schema1)]):
        write("manifest", f"doc{i}", bytes([ct]) + json.dumps(doc, indent=3).encode())


# ---- hosts.toml; the first byte picks the registry (see the target)
def hosts_seeds():
    write("hosts_toml", "mirrors", b"\x00" + b'''server = "https://registry-1.docker.io"
skip_verify = false

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
  skip_verify = true

[host."https://mirror.example/v2/prefix"]
  capabilities = ["pull"]
  override_path = true
  ca = ["mirror-ca.crt", "/etc/ssl/extra.pem"]
  header = { Authorization = "Basic abc", X-Extra = ["a", "b"] }
''')
    write("hosts_toml", "server-only", b"\x02" + b'''server = "https://registry.example:8443"
ca = "ca.crt"
client = [["client.cert", "client.key"]]
dial_timeout = "5s"
''')
    write("hosts_toml", "plain-http", b"\x01" + b'''[host."http://localhost:5000"]
capabilities = ["pull", "resolve", "push"]
''')


# ---- CNI ADD results
def cni_seeds():
    v1 = {
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:ff"},
            {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "mtu": 1500, "sandbox": "/run/netns/x"},
        ],
        "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
                {"address": "fd00::5/64", "interface": 2}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "::/0"}],
        "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local",
                "search": ["default.svc.cluster.local"], "options": ["ndots:5"]},
    }
    v04 = {"cniVersion": "0.4.0",
           "interfaces": [{"name": "eth0", "sandbox": "/run/netns/y"}],
           "ips": [{"version": "4", "address": "192.168.1.9/24", "interface": 0}],
           "dns": {}}
    write("cni_result", "v1.0.0.json", json.dumps(v1, indent=2))
    write("cni_result", "v0.4.0.json", json.dumps(v04))
    write("cni_result", "v1.1.0-minimal.json", '{"cniVersion":"1.1.0","ips":[]}')


# ---- SPDY/3.1 frames as client-go sends them
def spdy_dictionary():
    words = ("options head post put delete trace accept accept-charset accept-encoding "
             "accept-language accept-ranges age allow authorization cache-control connection "
             "content-base content-encoding content-language content-length content-location "
             "content-md5 content-range content-type date etag expect expires from host if-match "
             "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
             "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
             "server te trailer transfer-encoding upgrade user-agent vary via warning "
             "www-authenticate method get status").split() + ["200 OK"] + \
        "version HTTP/1.1 url public set-cookie keep-alive origin".split()
    tail = ("100101201202205206300302303304305306307402405406407408409410411412413414415416417"
            "502504505"
            "203 Non-Authoritative Information" "204 No Content" "301 Moved Permanently"
            "400 Bad Request" "401 Unauthorized" "403 Forbidden" "404 Not Found"
            "500 Internal Server Error" "501 Not Implemented" "503 Service Unavailable"
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec" " 00:00:00"
            " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,"
            "application/xhtml+xml,text/plain,text/javascript,"
            "publicprivatemax-age=gzip,deflate,sdch" "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")
    d = b"".join(struct.pack(">I", len(w)) + w.encode() for w in words) + tail.encode()
    assert len(d) == 1423, len(d)
    return d


def spdy_seeds():
    comp = zlib.compressobj(zdict=spdy_dictionary())

    def block(headers):
        raw = struct.pack(">I", len(headers))
        for n, v in headers:
            raw += struct.pack(">I", len(n)) + n.encode() + struct.pack(">I", len(v)) + v.encode()
        return comp.compress(raw) + comp.flush(zlib.Z_SYNC_FLUSH)

    def control(kind, flags, body):
        return struct.pack(">HHB", 0x8003, kind, flags) + len(body).to_bytes(3, "big") + body

    def syn(sid, headers, flags=0):
        return control(1, flags, struct.pack(">IIBB", sid, 0, 0, 0) + block(headers))

    def data(sid, payload, fin=False):
        return struct.pack(">IB", sid, 1 if fin else 0) + len(payload).to_bytes(3, "big") + payload

    exec_session = (
        syn(1, [("streamtype", "error")])
        + syn(3, [("streamtype", "stdin")])
        + syn(5, [("streamtype", "stdout")])
        + syn(7, [("streamtype", "resize")])
        + data(3, b"echo hello\n")
        + data(7, b'{"Width":80,"Height":24}\n')
        + control(6, 0, struct.pack(">I", 1))
        + data(3, b"", fin=True)
        + control(4, 0, struct.pack(">I", 0))
        + control(9, 0, struct.pack(">II", 3, 65536))
        + control(3, 0, struct.pack(">II", 5, 5))
        + control(7, 0, struct.pack(">II", 7, 0))
    )
    write("spdy", "exec", exec_session)
    comp = zlib.compressobj(zdict=spdy_dictionary())
    port_forward = (
        syn(1, [("streamtype", "error"), ("port", "8080"), ("requestid", "0")])
        + syn(3, [("streamtype", "data"), ("port", "8080"), ("requestid", "0")])
        + data(3, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        + control(8, 1, struct.pack(">I", 3) + block([("x-extra", "1")]))
    )
    write("spdy", "port-forward", port_forward)


# ---- WebSocket frames from a client (masked); the first byte picks the subprotocol
def ws_frame(opcode, payload, fin=True, mask=b"\x12\x34\x56\x78"):
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def websocket_seeds():
    resize = b'{"Width":120,"Height":40}'
    v5 = (ws_frame(2, b"\x00ls -l\n") + ws_frame(2, b"\x04" + resize)
          + ws_frame(9, b"ping") + ws_frame(2, b"\xff\x00") + ws_frame(8, b"\x03\xe8bye"))
    write("websocket", "v5-exec", b"\x00" + v5)
    v4 = (ws_frame(2, b"\x00abc", fin=False) + ws_frame(0, b"def\n")
          + ws_frame(2, b"\x04" + resize[:10]) + ws_frame(2, b"\x04" + resize[10:] + b"\n"))
    write("websocket", "v4-fragmented", b"\x01" + v4)
    b64 = (ws_frame(1, b"0" + base64.b64encode(b"echo hi\n"))
           + ws_frame(1, b"4" + base64.b64encode(resize)) + ws_frame(10, b""))
    write("websocket", "v4-base64", b"\x02" + b64)
    write("websocket", "long", b"\x00" + ws_frame(2, b"\x00" + b"y" * 300))


# ---- CRI requests as protobuf
def varint(n):
    n &= (1 << 64) - 1
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, value):
    """A field: int/bool as varint, str/bytes as length-delimited, list = repeated."""
    if isinstance(value, list):
        return b"".join(field(num, v) for v in value)
    if isinstance(value, bool) or isinstance(value, int):
        return varint(num << 3) + varint(int(value))
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def msg(*fields):
    return b"".join(field(n, v) for n, v in fields)


def kv_map(num, d):
    return [msg((1, k), (2, v)) for k, v in d.items()]


def cri_seeds():
    security = msg(
        (1, msg((1, ["NET_ADMIN", "SYS_TIME"]), (2, ["MKNOD"]))),
        (3, msg((1, 1), (2, 0), (3, 0))),
        (5, msg((1, 1000))),
        (12, msg((1, 1000))),
        (7, True),
        (8, [50, 60]),
        (11, True),
        (13, ["/proc/kcore", "/proc/keys"]),
        (14, ["/proc/sys"]),
        (15, msg((1, 0))),
    )
    resources = msg((1, 100000), (2, 50000), (3, 512), (4, 1 << 28), (5, 100), (6, "0-1"),
                    (9, kv_map(9, {"memory.high": "200000000"})), (10, 1 << 29))
    container = msg(
        (1, msg((1, "app"), (2, 1))),
        (2, msg((1, "docker.io/library/busybox:latest"), (18, "busybox"))),
        (3, ["/bin/sh"]),
        (4, ["-c", "echo $FOO; sleep 1"]),
        (5, "/work"),
        (6, [msg((1, "FOO"), (2, "bar")), msg((1, "PATH"), (2, "/usr/bin:/bin"))]),
        (7, [msg((1, "/data"), (2, "/tmp"), (3, True),
                 (5, 1)),
             msg((1, "/etc/motd"), (2, "/etc/hosts"))]),
        (9, kv_map(9, {"io.kubernetes.container.name": "app"})),
        (10, kv_map(10, {"io.kubernetes.container.restartCount": "1"})),
        (11, "app/1.log"),
        (12, True),
        (14, True),
        (15, msg((1, resources), (2, security))),
    )
    write("container_config", "app", b"\x40" + container)
    privileged = msg(
        (1, msg((1, "priv"))),
        (2, msg((1, "busybox"))),
        (8, [msg((1, "/dev/fuse"), (2, "/dev/fuse"), (3, "rwm"))]),
        (15, msg((2, msg((2, True), (3, msg((2, 3), (4, "c0ffee"))),
                         (16, msg((1, 1))))))),
        (18, 3),
    )
    write("container_config", "privileged", b"\xdd" + privileged)
    write("container_config", "minimal", b"\x42" + msg((1, msg((1, "m")))))

    sandbox = msg(
        (1, msg((1, "web"), (2, "uid-1"), (3, "default"), (4, 0))),
        (2, "web-0"),
        (3, "/var/log/pods/default_web_uid-1"),
        (4, msg((1, ["10.96.0.10"]), (2, ["default.svc.cluster.local"]), (3, ["ndots:5"]))),
        (5, [msg((1, 0), (2, 80), (3, 8080), (4, "127.0.0.1")), msg((1, 1), (2, 53))]),
        (6, kv_map(6, {"app": "web"})),
        (7, kv_map(7, {"kubernetes.io/config.source": "api"})),
        (8, msg((1, "kubepods-besteffort-poduid_1.slice"),
                (2, msg((1, msg((1, 0), (2, 1), (3, 0),
                                (5, msg((1, 0), (2, [msg((1, 65536), (2, 0), (3, 65536))]),
                                        (3, [msg((1, 65536), (2, 0), (3, 65536))]))))),
                        (11, 1), (9, msg((1, 0))))),
                (3, kv_map(3, {"net.ipv4.ip_unprivileged_port_start": "0"})),
                (4, msg((3, 10), (4, 20))),
                (5, msg((3, 512), (4, 100000000))))),
    )
    write("sandbox_config", "pod", sandbox)
    write("sandbox_config", "host-network",
          msg((1, msg((1, "h"), (2, "u"), (3, "kube-system"))),
              (8, msg((1, "/kubepods/burstable/podu"),
                      (2, msg((1, msg((1, 2), (2, 2), (3, 2)))))))))


if __name__ == "__main__":
    unpack_seeds()
    reference_seeds()
    manifest_seeds()
    hosts_seeds()
    cni_seeds()
    spdy_seeds()
    websocket_seeds()
    cri_seeds()
