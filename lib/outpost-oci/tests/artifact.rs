//! Artifacts on a real registry (Debian's `docker-registry`), every request counted by a
//! recording proxy: push, poll, an unchanged poll that costs one `HEAD`, a changed one, a
//! registry that is down, and a token-protected registry.
// Fixture helpers outside `#[test]` functions unwrap too: a failed setup is a failed test.
#![allow(clippy::unwrap_used)]

use outpost_archive::{Cancel, Digest};
use outpost_oci::{ArtifactPoll, ArtifactSource, RegistrySettings, RetryPolicy, push_artifact};
use outpost_testkit::{FaultProxy, Registry, TokenServer};
use outpost_types::source::OciReference;

const DOC: &str = "application/vnd.outpost.fleet.v1+json";
const SIG: &str = "application/vnd.outpost.fleet.signature.v1+minisign";

fn settings(hosts: &[String]) -> RegistrySettings {
    RegistrySettings {
        insecure_hosts: hosts.to_vec(),
        retry: RetryPolicy {
            attempts: 2,
            first_backoff: std::time::Duration::from_millis(10),
            max_backoff: std::time::Duration::from_millis(10),
        },
        ..RegistrySettings::default()
    }
}

fn reference(host: &str) -> OciReference {
    OciReference::parse(&format!("{host}/fleet/doc:prod")).unwrap()
}

async fn push(settings: &RegistrySettings, host: &str, doc: &[u8], sig: &[u8]) -> Digest {
    push_artifact(
        settings,
        &reference(host),
        DOC,
        &[(DOC, doc), (SIG, sig)],
        &Cancel::new(),
    )
    .await
    .unwrap()
    .digest
}

#[tokio::test]
async fn unchanged_poll_is_one_head_and_no_blob() {
    let reg = Registry::start();
    let proxy = FaultProxy::start(reg.addr(), Vec::new());
    let s = settings(&[reg.host(), proxy.host()]);
    let d1 = push(&s, &reg.host(), b"{\"generation\": 1}", b"sig one").await;

    let source = ArtifactSource::new(&s, &reference(&proxy.host())).unwrap();
    let cancel = Cancel::new();
    let ArtifactPoll::Changed(a) = source.poll(None, 1 << 20, &cancel).await.unwrap() else {
        panic!("a first poll fetches the artifact");
    };
    assert_eq!(a.digest, d1);
    assert_eq!(a.artifact_type.as_deref(), Some(DOC));
    assert_eq!(a.blob(DOC), Some(&b"{\"generation\": 1}"[..]));
    assert_eq!(a.blob(SIG), Some(&b"sig one"[..]));
    let first = proxy.requests();
    let methods: Vec<_> = first.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["HEAD", "GET", "GET", "GET"], "{first:?}");

    // Unchanged: exactly one request, a HEAD of the manifest by tag; no blob.
    for _ in 0..3 {
        let before = proxy.requests().len();
        let polled = source.poll(Some(&d1), 1 << 20, &cancel).await.unwrap();
        assert_eq!(polled, ArtifactPoll::Unchanged { digest: d1.clone() });
        let seen = &proxy.requests()[before..];
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].method, "HEAD");
        assert_eq!(seen[0].path, "/v2/fleet/doc/manifests/prod");
    }

    // A new push: the next poll fetches the new manifest and blobs, by digest.
    let d2 = push(&s, &reg.host(), b"{\"generation\": 2}", b"sig two").await;
    assert_ne!(d1, d2);
    let before = proxy.requests().len();
    let ArtifactPoll::Changed(a) = source.poll(Some(&d1), 1 << 20, &cancel).await.unwrap() else {
        panic!("a new digest fetches the artifact");
    };
    assert_eq!(a.digest, d2);
    assert_eq!(a.blob(DOC), Some(&b"{\"generation\": 2}"[..]));
    let seen = &proxy.requests()[before..];
    assert!(
        seen[1].path.ends_with(&format!("/manifests/{d2}")),
        "{seen:?}"
    );
    assert!(seen[2..].iter().all(|r| r.path.contains("/blobs/sha256:")));

    // A blob over the limit is refused before it is downloaded.
    let before = proxy.requests().len();
    let e = source.poll(Some(&d1), 4, &cancel).await.unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    assert!(
        proxy.requests()[before..]
            .iter()
            .all(|r| !r.path.contains("/blobs/")),
        "no blob fetched"
    );

    // Down: a network failure, retried by the rule, then an error; then it recovers.
    proxy.set_down(true);
    let e = source.poll(Some(&d2), 1 << 20, &cancel).await.unwrap_err();
    assert_eq!(e.code(), outpost_types::ErrorCode::DownloadFailed, "{e}");
    proxy.set_down(false);
    assert_eq!(
        source.poll(Some(&d2), 1 << 20, &cancel).await.unwrap(),
        ArtifactPoll::Unchanged { digest: d2 }
    );
}

#[tokio::test]
async fn missing_tag_is_not_found() {
    let reg = Registry::start();
    let s = settings(&[reg.host()]);
    let source = ArtifactSource::new(&s, &reference(&reg.host())).unwrap();
    let e = source
        .poll(None, 1 << 20, &Cancel::new())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("404") || e.to_string().contains("not found"),
        "{e}"
    );
}

#[tokio::test]
async fn token_registry_answers_the_challenge_once() {
    let tokens = TokenServer::start("fleet", "secret");
    let reg = Registry::start_with(tokens.registry_auth());
    let proxy = FaultProxy::start(reg.addr(), Vec::new());
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("password");
    fs_err::write(&password, "secret\n").unwrap();
    let mut s = settings(&[reg.host(), proxy.host()]);
    s.default_login = outpost_oci::Login {
        username: Some("fleet".into()),
        password_file: Some(password),
    };
    let d = push(&s, &reg.host(), b"{}", b"sig").await;
    let source = ArtifactSource::new(&s, &reference(&proxy.host())).unwrap();
    let cancel = Cancel::new();
    assert!(matches!(
        source.poll(None, 1 << 20, &cancel).await.unwrap(),
        ArtifactPoll::Changed(_)
    ));
    let before = proxy.requests().len();
    assert_eq!(
        source.poll(Some(&d), 1 << 20, &cancel).await.unwrap(),
        ArtifactPoll::Unchanged { digest: d }
    );
    let seen = &proxy.requests()[before..];
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].authorized, "the token is sent up front");
}
