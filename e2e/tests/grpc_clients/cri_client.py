"""A CRI client on grpc-core (Python grpcio), for e2e/tests/grpc_clients.rs.

    cri_client.py SOCKET AUTHORITY COMMAND [ARG]

AUTHORITY is the channel's `grpc.default_authority`, or `-` for grpcio's default. Each command
prints one JSON line per answer on stdout; a failed call exits 1 with its status on stderr.

    version             Version{version: "v1"}
    list-pods           ListPodSandbox{}: the pods' ids
    events              GetContainerEvents{}: "subscribed" once the server answered the call,
                        then the first event
    version-latency N   N Version calls on one channel: mean, p50 and p99 in microseconds

The messages are encoded and decoded by hand (protobuf wire format: every field used here is a
string, a varint or a nested message), so no generated code or protobuf package is needed.
"""

import json
import sys
import time

import grpc

SERVICE = "/runtime.v1.RuntimeService/"


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string_field(number, value):
    data = value.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def fields(message):
    """(number, value) of each field: bytes for length-delimited ones, int for varints."""
    i = 0
    while i < len(message):
        key, i = read_varint(message, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(message, i)
        elif wire == 2:
            n, i = read_varint(message, i)
            value, i = message[i : i + n], i + n
        elif wire == 1:
            value, i = message[i : i + 8], i + 8
        elif wire == 5:
            value, i = message[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} in {message!r}")
        yield number, value


def read_varint(data, i):
    n = shift = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def channel(socket, authority):
    options = [] if authority == "-" else [("grpc.default_authority", authority)]
    return grpc.insecure_channel("unix://" + socket, options=options)


def version(ch):
    call = ch.unary_unary(SERVICE + "Version")
    answer = dict(fields(call(string_field(1, "v1"), timeout=10)))
    names = {1: "version", 2: "runtime_name", 3: "runtime_version", 4: "runtime_api_version"}
    return {names[k]: v.decode() for k, v in answer.items() if k in names}


def list_pods(ch):
    call = ch.unary_unary(SERVICE + "ListPodSandbox")
    pods = [dict(fields(item)) for n, item in fields(call(b"", timeout=10)) if n == 1]
    return {"ids": [p[1].decode() for p in pods if 1 in p]}


def events(ch):
    call = ch.unary_stream(SERVICE + "GetContainerEvents")(b"", timeout=120)
    # The server answers the call's headers once it has subscribed: an event caused after this
    # line is one the stream carries.
    call.initial_metadata()
    print(json.dumps({"subscribed": True}), flush=True)
    event = dict(fields(next(call)))
    print(
        json.dumps({"container_id": event[1].decode(), "type": event.get(2, 0)}), flush=True
    )
    call.cancel()


def version_latency(ch, n):
    version(ch)  # the connection and its first call are not what is measured
    samples = []
    call = ch.unary_unary(SERVICE + "Version")
    request = string_field(1, "v1")
    for _ in range(n):
        start = time.perf_counter_ns()
        call(request, timeout=10)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "calls": n,
        "mean_us": round(sum(samples) / n, 1),
        "p50_us": round(samples[n // 2], 1),
        "p99_us": round(samples[min(n - 1, n * 99 // 100)], 1),
    }


def main():
    socket, authority, command = sys.argv[1:4]
    with channel(socket, authority) as ch:
        try:
            if command == "version":
                print(json.dumps(version(ch)), flush=True)
            elif command == "list-pods":
                print(json.dumps(list_pods(ch)), flush=True)
            elif command == "events":
                events(ch)
            elif command == "version-latency":
                print(json.dumps(version_latency(ch, int(sys.argv[4]))), flush=True)
            else:
                sys.exit(f"unknown command {command}")
        except grpc.RpcError as e:
            print(f"{command}: {e.code()}: {e.details()}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
