//! What a real kubelet sends, built the way its own code builds it (issue 21), tried through the
//! daemon: pod and container requests per QoS class and cgroup driver, the calls it makes over a
//! pod's life, and devices. One test binary, a module per concern. Every test removes what it made
//! and ends with `Node::finish`, which checks that nothing is left.

mod devices;
mod lifecycle;
mod shapes;

/// The annotations the kubelet puts on every container it creates (`newContainerAnnotations`):
/// the restart count is the attempt; the rest is what a pod without a termination message path
/// of its own gets.
fn kubelet_container_annotations(attempt: u32) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        ("io.kubernetes.container.hash".into(), "5d1b9e3f".into()),
        (
            "io.kubernetes.container.restartCount".into(),
            attempt.to_string(),
        ),
        (
            "io.kubernetes.container.terminationMessagePath".into(),
            "/dev/termination-log".into(),
        ),
        (
            "io.kubernetes.container.terminationMessagePolicy".into(),
            "File".into(),
        ),
        (
            "io.kubernetes.pod.terminationGracePeriod".into(),
            "30".into(),
        ),
    ])
}
