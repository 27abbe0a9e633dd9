#!/usr/bin/env python3
"""Writes an OCI image layout for the benchmark: a busybox base layer (hard links for the
applets) plus optional filler layers of incompressible data, so pull+unpack moves real bytes.

    mkimage.py OUT_DIR TAG [--filler-layers N --filler-mib M]
"""
import argparse, gzip, hashlib, io, json, os, tarfile, time

APPLETS = ["sh", "sleep", "true", "false", "echo", "cat", "ls", "ps", "id", "hostname", "env", "top"]


def blob(out, data, media_type):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(out, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}


def layer(out, build):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)
    raw = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    # mtime 0 keeps the compressed bytes the same for the same content.
    gz = gzip.compress(raw, compresslevel=1, mtime=0)
    return blob(out, gz, "application/vnd.oci.image.layer.v1.tar+gzip"), diff_id


def add_dir(tar, name):
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(ti)


def busybox_layer(tar):
    for d in ["bin", "etc", "tmp", "root"]:
        add_dir(tar, d)
    with open("/bin/busybox", "rb") as f:
        data = f.read()
    ti = tarfile.TarInfo("bin/busybox")
    ti.size, ti.mode, ti.mtime = len(data), 0o755, 0
    tar.addfile(ti, io.BytesIO(data))
    for a in APPLETS:
        ti = tarfile.TarInfo(f"bin/{a}")
        ti.type, ti.linkname, ti.mode, ti.mtime = tarfile.LNKTYPE, "bin/busybox", 0o755, 0
        tar.addfile(ti)
    for name, text in [("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"),
                       ("etc/group", "root:x:0:\nnogroup:x:65534:\n")]:
        b = text.encode()
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(b), 0o644, 0
        tar.addfile(ti, io.BytesIO(b))


def filler_layer(i, mib):
    def build(tar):
        add_dir(tar, "data")
        data = os.urandom(mib << 20)
        ti = tarfile.TarInfo(f"data/filler-{i}")
        ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
        tar.addfile(ti, io.BytesIO(data))
    return build


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("tag")
    p.add_argument("--filler-layers", type=int, default=0)
    p.add_argument("--filler-mib", type=int, default=20)
    p.add_argument("--cmd", nargs="+", default=["sh"], help="the image's Cmd")
    a = p.parse_args()
    os.makedirs(os.path.join(a.out, "blobs", "sha256"), exist_ok=True)
    layers = [layer(a.out, busybox_layer)]
    layers += [layer(a.out, filler_layer(i, a.filler_mib)) for i in range(a.filler_layers)]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0)),
        "config": {"Env": ["PATH=/bin"], "Cmd": a.cmd},
        "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
    }
    cfg = blob(a.out, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cfg, "layers": [l for l, _ in layers]}
    m = blob(a.out, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
    m["annotations"] = {"org.opencontainers.image.ref.name": a.tag}
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [m]}, f)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


if __name__ == "__main__":
    main()
