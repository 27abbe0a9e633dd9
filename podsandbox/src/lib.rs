//! Pod sandboxes: the namespaces a pod shares (network, IPC, UTS, and PID when asked), pinned as
//! bind-mounted nsfs files under the state dir so that no pause image is needed; the pod's hostname,
//! `/etc/hosts` and `/etc/resolv.conf` files, its `/dev/shm`, its sysctls and its cgroup. It persists
//! each sandbox's state atomically and undoes every step of a failed start. It never sees gRPC types and
//! never starts containers: it hands plain paths to whoever does.
#![deny(unsafe_code)]
