//! Binding sets the umask only around bind(2). Alone in its own test binary: the umask is
//! process-wide, so no other test may bind while this one reads it.
// Test helpers outside #[test] fns: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use outpost_api::{Api, Module, Server};
use rustix::fs::Mode;

fn current_umask() -> Mode {
    let m = rustix::process::umask(Mode::from_bits_truncate(0o022));
    rustix::process::umask(m);
    m
}

#[tokio::test]
async fn umask_is_restored_after_bind() {
    rustix::process::umask(Mode::from_bits_truncate(0o002));
    let dir = tempfile::tempdir().unwrap();
    let mut builder = Api::builder();
    builder.mount(Module::root("localapi").get("/status", || async {}));
    let sock = dir.path().join("api.sock");
    let server = Server::new(builder.build().unwrap())
        .bind_unix(&sock)
        .await
        .unwrap();
    assert_eq!(current_umask().bits(), 0o002);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        fs_err::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o700
    );
    drop(server);
}
