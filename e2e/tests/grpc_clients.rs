//! CRI clients that are not Go's. gRPC clients on grpc-core (Python `grpcio`, C++ — node agents
//! such as Falco read the CRI socket this way —, Ruby, PHP) and on grpc-java send the unix
//! socket's path as the HTTP/2 `:authority`, which h2 alone refuses with `RST_STREAM
//! PROTOCOL_ERROR` on every call. Here Python `grpcio` (installed by `deploy/install-deps.sh
//! test`) calls a unary RPC, a list and a server-streaming RPC through
//! `tests/grpc_clients/cri_client.py`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use carapace_e2e::node::{Node, container};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const INDEX: u8 = 150;
const UID: &str = "0d1e2f30-0000-4000-8000-000000000150";

/// The venv `install-deps.sh test` makes, unless `CARAPACE_TEST_PYTHON` names another Python
/// with `grpc`.
fn python() -> PathBuf {
    let python = std::env::var_os("CARAPACE_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/opt/carapace-test/venv/bin/python3".into());
    assert!(
        python.exists(),
        "{} is missing: run `deploy/install-deps.sh test`",
        python.display()
    );
    python
}

fn client(socket: &Path, authority: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_clients/cri_client.py"))
        .arg(socket)
        .arg(authority)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// One call's answer, as the client printed it; the call's status when it failed.
async fn call(socket: &Path, authority: &str, args: &[&str]) -> Result<Value, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        client(socket, authority, args).output(),
    )
    .await
    .expect("the grpcio client to finish")
    .expect("running the grpcio client");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("the client's JSON answer"))
}

#[tokio::test]
async fn grpcio_with_the_socket_path_as_authority_is_answered() {
    let (mut node, pod, pod_id) = Node::with_running_pod(INDEX, "grpcio", UID).await;
    let socket = node.d.config.socket();
    let path = socket.display().to_string();

    // The path as grpc-core 1.57+ and grpc-java send it, its `unix://` form, and what this grpcio
    // sends with no options at all: each is answered as `localhost` is.
    for authority in [path.as_str(), &format!("unix://{path}"), "-", "localhost"] {
        let version = call(&socket, authority, &["version"])
            .await
            .unwrap_or_else(|e| panic!("Version with :authority {authority:?}: {e}"));
        assert_eq!(
            version,
            json!({"version": "0.1.0", "runtime_name": "carapace",
                   "runtime_version": env!("CARGO_PKG_VERSION"), "runtime_api_version": "v1"}),
            "{authority}"
        );
    }
    let pods = call(&socket, &path, &["list-pods"])
        .await
        .unwrap_or_else(|e| panic!("ListPodSandbox: {e}"));
    assert_eq!(pods, json!({"ids": [pod_id]}));

    // A server stream: open it, then cause an event, and read it off the stream.
    let mut events = client(&socket, &path, &["events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the grpcio client");
    let mut lines = BufReader::new(events.stdout.take().expect("stdout")).lines();
    let mut next_line = async || {
        tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("a line from the events client")
            .expect("reading the events client")
    };
    let Some(subscribed) = next_line().await else {
        let out = events.wait_with_output().await.expect("the events client");
        panic!(
            "GetContainerEvents: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert_eq!(subscribed, r#"{"subscribed": true}"#);
    let id = node
        .create(&pod_id, &pod, &container("evented", &["sleep", "60"]))
        .await
        .expect("CreateContainer");
    let event: Value =
        serde_json::from_str(&next_line().await.expect("an event")).expect("the event's JSON");
    // CONTAINER_CREATED_EVENT is 0.
    assert_eq!(event, json!({"container_id": id, "type": 0}));
    let status = events.wait().await.expect("the events client");
    assert!(status.success(), "the events client: {status}");

    node.remove_all(&pod_id).await;
}
