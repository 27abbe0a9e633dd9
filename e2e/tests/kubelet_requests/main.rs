//! What a real kubelet sends, built the way its own code builds it (issue 21), tried through the
//! daemon: pod and container requests per QoS class and cgroup driver, the calls it makes over a
//! pod's life, and devices. One test binary, a module per concern. Every test removes what it made
//! and ends with `Node::finish`, which checks that nothing is left.

mod devices;
mod lifecycle;
mod shapes;
