//! The Unix-socket server: binding rules, graceful shutdown, peer credentials, authorisation.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use outpost_api::{AccessPolicy, Api, ApiClient, Json, Module, Server};
use outpost_types::config::ApiConfig;
use serde_json::{Value, json};
use tokio::sync::Notify;

#[tokio::test]
async fn socket_is_created_0700_in_a_new_directory() {
    let srv = start(standard_builder().build().unwrap()).await;
    let meta = fs_err::symlink_metadata(&srv.sock).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert!(srv.sock.parent().unwrap().is_dir());
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    // A socket file nobody listens on, as a crashed server leaves behind.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let srv = start_at(standard_builder().build().unwrap(), dir, sock).await;
    request(&srv.sock, "GET", "/status")
        .await
        .assert_json(200, r#"{"version":"test"}"#);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn live_socket_is_refused_and_left_alone() {
    let srv = start(standard_builder().build().unwrap()).await;
    let err = Server::new(standard_builder().build().unwrap())
        .bind_unix(&srv.sock)
        .await
        .unwrap_err();
    assert!(
        matches!(err, outpost_api::Error::SocketInUse { .. }),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "another outpost daemon is listening on {}; refusing to replace its socket",
            srv.sock.display()
        )
    );
    // The first server is unaffected.
    request(&srv.sock, "GET", "/status")
        .await
        .assert_json(200, r#"{"version":"test"}"#);
    srv.stop().await.unwrap();
}

#[tokio::test]
async fn non_socket_files_are_never_removed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("api.sock");
    fs_err::write(&file, "precious").unwrap();
    let err = Server::new(standard_builder().build().unwrap())
        .bind_unix(&file)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            outpost_api::Error::NotASocket {
                kind: "a regular file",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&file.display().to_string()));
    assert_eq!(fs_err::read_to_string(&file).unwrap(), "precious");

    let subdir = dir.path().join("dir.sock");
    fs_err::create_dir(&subdir).unwrap();
    let err = Server::new(standard_builder().build().unwrap())
        .bind_unix(&subdir)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            outpost_api::Error::NotASocket {
                kind: "a directory",
                ..
            }
        ),
        "{err}"
    );

    // A symlink is refused even when it points at a stale socket.
    let target = dir.path().join("real.sock");
    drop(std::os::unix::net::UnixListener::bind(&target).unwrap());
    let link = dir.path().join("link.sock");
    fs_err::os::unix::fs::symlink(&target, &link).unwrap();
    let err = Server::new(standard_builder().build().unwrap())
        .bind_unix(&link)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            outpost_api::Error::NotASocket {
                kind: "a symbolic link",
                ..
            }
        ),
        "{err}"
    );
    assert!(target.exists() && fs_err::symlink_metadata(&link).is_ok());
}

#[tokio::test]
async fn serve_without_listener_is_an_error() {
    let err = Server::new(standard_builder().build().unwrap())
        .serve(async {})
        .await
        .unwrap_err();
    assert!(matches!(err, outpost_api::Error::NoListener));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests_then_removes_the_socket() {
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let mut builder = Api::builder();
    builder.mount(Module::root("localapi").post("/slow", move || {
        let (s, r) = (s.clone(), r.clone());
        async move {
            s.notify_one();
            r.notified().await;
            Json(json!({"finished": true}))
        }
    }));
    let mut srv = start(builder.build().unwrap()).await;
    let client = ApiClient::new(&srv.sock);
    let in_flight = tokio::spawn(async move { client.post::<Value, Value>("/slow", None).await });
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .unwrap();

    srv.trigger_shutdown();
    // New connections are refused while the request is still running.
    let sock = srv.sock.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::net::UnixStream::connect(&sock).await {
            // Refused once the listener is closed; reset if it closed with us in its backlog.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break;
            }
            Err(e) => panic!("unexpected connect error {e}"),
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "still accepting after shutdown"
                );
                tokio::task::yield_now().await;
            }
        }
    }
    assert!(!in_flight.is_finished());
    assert!(
        !srv.task.is_finished(),
        "the server waits for the in-flight request"
    );

    release.notify_one();
    let answer = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer, json!({"finished": true}));
    let sock = srv.sock.clone();
    let _dir = srv.stop().await.unwrap();
    assert!(sock.parent().unwrap().is_dir());
    assert!(!sock.exists(), "the socket file is removed");
}

#[tokio::test]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let srv = start(standard_builder().build().unwrap()).await;
    let mut stream = tokio::net::UnixStream::connect(&srv.sock).await.unwrap();
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"{\"version\":\"test\"}\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before answering");
        seen.extend_from_slice(&buf[..n]);
    }
    // The connection is open and idle; shutdown closes it instead of waiting for the client.
    srv.stop().await.unwrap();
    let n = tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the server closed the idle connection");
}

#[tokio::test]
async fn socket_replaced_while_serving_is_left_in_place() {
    let srv = start(standard_builder().build().unwrap()).await;
    fs_err::remove_file(&srv.sock).unwrap();
    fs_err::write(&srv.sock, "someone else's").unwrap();
    let sock = srv.sock.clone();
    let _dir = srv.stop().await.unwrap();
    assert_eq!(fs_err::read_to_string(&sock).unwrap(), "someone else's");
}

#[tokio::test]
async fn peer_credentials_are_the_callers() {
    let srv = start(standard_builder().build().unwrap()).await;
    let me: Value = ApiClient::new(&srv.sock).get("/whoami").await.unwrap();
    assert_eq!(me["uid"], rustix::process::geteuid().as_raw());
    assert_eq!(me["gid"], rustix::process::getegid().as_raw());
    assert_eq!(me["pid"], std::process::id());
    let cgroup = fs_err::read_to_string("/proc/self/cgroup").unwrap();
    assert_eq!(
        me["container_id"],
        json!(outpost_api::caller::parse_container_id(&cgroup))
    );
    srv.stop().await.unwrap();
}

/// A client in another process, as another uid/gid, speaking raw HTTP over the socket.
const CHILD_CLIENT: &str = r#"
import json, os, socket, sys
def call(method, path, body=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    data = b""
    if body is not None:
        data = body.encode()
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    s.sendall(head.encode() + b"\r\n" + data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    head, _, rest = out.partition(b"\r\n\r\n")
    return {"status": int(head.split()[1]), "body": json.loads(rest)}
print(json.dumps({
    "uid": os.getuid(),
    "whoami": call("GET", "/whoami"),
    "status": call("GET", "/status"),
    "install": call("POST", "/pkg/install", '{"version":"1.0"}'),
    "secret": call("GET", "/secret"),
}))
"#;

fn run_child(sock: &std::path::Path, uid: u32, gid: u32) -> Value {
    run_child_in_groups(sock, uid, gid, &[])
}

/// [`run_child`] with supplementary groups (set before dropping to `uid`).
fn run_child_in_groups(sock: &std::path::Path, uid: u32, gid: u32, groups: &[u32]) -> Value {
    use std::os::unix::process::CommandExt as _;
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c").arg(CHILD_CLIENT).arg(sock);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Lets other uids reach the socket (the test runs as root; production keeps 0700).
fn open_up(srv: &Running) {
    fs_err::set_permissions(srv.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    fs_err::set_permissions(
        srv.sock.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs_err::set_permissions(&srv.sock, std::fs::Permissions::from_mode(0o777)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_uid_may_read_but_not_mutate() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test runs as root"
    );
    let srv = start(standard_builder().build().unwrap()).await;
    open_up(&srv);
    let sock = srv.sock.clone();
    let child = tokio::task::spawn_blocking(move || run_child(&sock, 65534, 65534))
        .await
        .unwrap();
    assert_eq!(child["uid"], 65534);
    assert_eq!(child["whoami"]["status"], 200);
    assert_eq!(child["whoami"]["body"]["uid"], 65534);
    assert_eq!(child["whoami"]["body"]["gid"], 65534);
    assert_eq!(child["status"]["status"], 200);
    assert_eq!(child["install"]["status"], 403);
    assert_eq!(
        child["install"]["body"],
        json!({"error": {"message": "uid 65534 may not call POST /{package}/install", "code": "forbidden"}})
    );

    // A GET declared privileged is refused too.
    assert_eq!(child["secret"]["status"], 403);
    assert_eq!(child["secret"]["body"]["error"]["code"], "forbidden");
    srv.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_uids_and_gids_may_mutate() {
    let config = ApiConfig {
        allow_uids: vec![65534],
        allow_gids: vec![4242],
        tcp: None,
    };
    let mut builder = Api::builder().access_policy(AccessPolicy::from_config(&config));
    builder.mount(local_api());
    let srv = start(builder.build().unwrap()).await;
    open_up(&srv);
    let sock = srv.sock.clone();
    let by_uid = tokio::task::spawn_blocking(move || run_child(&sock, 65534, 65534))
        .await
        .unwrap();
    assert_eq!(by_uid["install"]["status"], 200, "{by_uid}");
    let sock = srv.sock.clone();
    let by_gid = tokio::task::spawn_blocking(move || run_child(&sock, 65533, 4242))
        .await
        .unwrap();
    assert_eq!(by_gid["install"]["status"], 200, "{by_gid}");
    let sock = srv.sock.clone();
    let by_group =
        tokio::task::spawn_blocking(move || run_child_in_groups(&sock, 65533, 65533, &[100, 4242]))
            .await
            .unwrap();
    assert_eq!(
        by_group["install"]["status"], 200,
        "a supplementary group counts: {by_group}"
    );
    let sock = srv.sock.clone();
    let neither =
        tokio::task::spawn_blocking(move || run_child_in_groups(&sock, 65533, 65533, &[100]))
            .await
            .unwrap();
    assert_eq!(neither["install"]["status"], 403, "{neither}");
    srv.stop().await.unwrap();
}

async fn tcp_request(addr: std::net::SocketAddr, req: &[u8]) -> Reply {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    parse_reply(&out)
}

async fn tcp_server(
    config: &ApiConfig,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), outpost_api::Error>>,
) {
    let mut builder = Api::builder().access_policy(AccessPolicy::from_config(config));
    builder.mount(local_api());
    let server = Server::new(builder.build().unwrap())
        .bind_tcp("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.tcp_local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async move {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

#[tokio::test]
async fn tcp_callers_are_trusted_only_when_tcp_is_configured() {
    const POST: &[u8] = b"POST /pkg/install HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    const GET: &[u8] = b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let untrusted = ApiConfig::default();
    let (addr, stop, task) = tcp_server(&untrusted).await;
    assert_eq!(tcp_request(addr, GET).await.status, 200);
    tcp_request(addr, POST).await.assert_json(
        403,
        r#"{"error":{"message":"a caller without credentials may not call POST /{package}/install","code":"forbidden"}}"#,
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    let trusted = ApiConfig {
        tcp: Some("127.0.0.1:0".parse().unwrap()),
        ..ApiConfig::default()
    };
    let (addr, stop, task) = tcp_server(&trusted).await;
    tcp_request(addr, POST)
        .await
        .assert_json(200, r#"{"had_body":false,"package":"pkg"}"#);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn peer_is_axum_connect_info_for_axum_serve() {
    // Embedders serving the Api with axum::serve get the same peer credentials.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("axum.sock");
    let api = standard_builder().build().unwrap();
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let make = <outpost_api::Api as axum::ServiceExt<axum::extract::Request>>::into_make_service_with_connect_info::<
        outpost_api::Peer,
    >(api);
    let server = tokio::spawn(async move { axum::serve(listener, make).await });
    let me: Value = ApiClient::new(&sock).get("/whoami").await.unwrap();
    assert_eq!(me["pid"], std::process::id());
    assert_eq!(me["uid"], rustix::process::geteuid().as_raw());
    server.abort();
}
