use super::settings::Credentials;
use super::*;

#[test]
fn settings_from_config() {
    let mut c = RegistryConfig {
        insecure_hosts: vec!["127.0.0.1:5000".into()],
        mirror: Some(String::new()),
        username: Some("u".into()),
        password_file: Some("/p".into()),
        stall_timeout: outpost_types::config::HumanDuration(Duration::from_millis(300)),
        ..RegistryConfig::default()
    };
    c.auths.insert(
        "ghcr.io".into(),
        outpost_types::config::RegistryLogin {
            username: Some("g".into()),
            password_file: Some("/g".into()),
        },
    );
    let s = RegistrySettings::from_config(&c);
    assert!(s.is_insecure("127.0.0.1:5000"));
    assert!(!s.is_insecure("127.0.0.1"));
    assert_eq!(s.mirror, None, "an empty mirror is no mirror");
    assert_eq!(s.pull_host("a.io"), "a.io");
    assert_eq!(s.login_for("ghcr.io").username.as_deref(), Some("g"));
    assert_eq!(s.login_for("other.io").username.as_deref(), Some("u"));
    assert_eq!(s.stall_timeout, Duration::from_millis(300));
    assert_eq!(
        RegistrySettings::default().stall_timeout,
        Duration::from_secs(60)
    );
}

#[test]
fn credentials_are_read_with_one_newline_stripped_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pass");
    fs_err::write(&file, "s3cret\n\n").unwrap();
    let mut s = RegistrySettings::default();
    s.auths.insert(
        "h:1".into(),
        Login {
            username: Some("me".into()),
            password_file: Some(file.clone()),
        },
    );
    let c = s.credentials("h:1").unwrap();
    let Credentials::Basic { username, password } = &c else {
        panic!("{c:?}")
    };
    assert_eq!(username, "me");
    assert_eq!(password.0, "s3cret\n");
    assert!(!format!("{c:?}").contains("s3cret"));
    fs_err::write(&file, "crlf\r\n").unwrap();
    let Credentials::Basic { password, .. } = s.credentials("h:1").unwrap() else {
        panic!()
    };
    assert_eq!(password.0, "crlf");
    assert!(matches!(
        s.credentials("other").unwrap(),
        Credentials::Anonymous
    ));
}

#[test]
fn incomplete_or_unreadable_credentials_are_refused() {
    let mut s = RegistrySettings {
        default_login: Login {
            username: Some("me".into()),
            password_file: None,
        },
        ..RegistrySettings::default()
    };
    let err = s.credentials("x").unwrap_err();
    assert!(
        err.to_string()
            .contains("registry has a username but no password_file"),
        "{err}"
    );
    s.auths.insert(
        "h".into(),
        Login {
            username: None,
            password_file: Some("/nonexistent/pass".into()),
        },
    );
    let err = s.credentials("h").unwrap_err();
    assert!(
        err.to_string()
            .contains("registry.auths.\"h\" has a password_file but no username"),
        "{err}"
    );
    s.auths.insert(
        "h".into(),
        Login {
            username: Some("u".into()),
            password_file: Some("/nonexistent/pass".into()),
        },
    );
    let err = s.credentials("h").unwrap_err();
    assert!(matches!(err, OciError::Credentials { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/pass"), "{err}");
    assert_eq!(err.code(), outpost_types::ErrorCode::DownloadFailed);
}

fn cx() -> ReqCtx {
    ReqCtx {
        what: "oci://h/r:1".into(),
        host: "h".into(),
        username: Some("me".into()),
        insecure: false,
    }
}

#[test]
fn registry_errors_are_classified() {
    let envelope = |code: &str| OciDistributionError::RegistryError {
        envelope: serde_json::from_str(&format!(
            r#"{{"errors":[{{"code":"{code}","message":"m"}}]}}"#
        ))
        .unwrap(),
        url: "http://h/v2/r/manifests/1".into(),
    };
    let f = classify(envelope("MANIFEST_UNKNOWN"), &cx());
    assert!(!f.transient);
    assert_eq!(
        f.error
            .to_string()
            .split(": Registry error")
            .next()
            .unwrap(),
        "oci://h/r:1: not found (HTTP 404): MANIFEST_UNKNOWN: m"
    );
    let f = classify(envelope("TOOMANYREQUESTS"), &cx());
    assert!(f.transient);
    let f = classify(envelope("DENIED"), &cx());
    assert!(!f.transient);
    assert!(f.error.to_string().contains("HTTP 403"), "{}", f.error);
    let f = classify(
        OciDistributionError::UnauthorizedError {
            url: "http://h/v2/".into(),
        },
        &cx(),
    );
    assert!(!f.transient);
    assert!(
        f.error
            .to_string()
            .contains("refused the credentials of user \"me\""),
        "{}",
        f.error
    );
    for (code, transient) in [(500, true), (503, true), (429, true), (400, false)] {
        let f = classify(
            OciDistributionError::ServerError {
                code,
                url: "u".into(),
                message: "<html>\nbody".into(),
            },
            &cx(),
        );
        assert_eq!(f.transient, transient, "{code}");
        assert!(
            f.error
                .to_string()
                .contains(&format!("HTTP {code}: <html>")),
            "{}",
            f.error
        );
        assert_eq!(
            f.error.code(),
            outpost_types::ErrorCode::DownloadFailed,
            "{code}"
        );
    }
    let a = Digest::of(b"a").to_string();
    let b = Digest::of(b"b").to_string();
    let f = classify(
        OciDistributionError::DigestError(DigestError::VerificationError {
            expected: a,
            actual: b,
        }),
        &cx(),
    );
    assert!(!f.transient);
    assert_eq!(f.error.code(), outpost_types::ErrorCode::Integrity);
}

#[test]
fn references_prefer_the_digest() {
    let d = format!("sha256:{}", "a".repeat(64));
    let r = OciReference::parse(&format!("h:5/a/b:1@{d}")).unwrap();
    let c = client_reference("m:6", &r);
    assert_eq!(c.resolve_registry(), "m:6");
    assert_eq!(c.repository(), "a/b");
    assert_eq!(c.digest(), Some(d.as_str()));
    assert_eq!(c.tag(), None);
    assert_eq!(
        describe(&r, "m:6"),
        format!("oci://h:5/a/b:1@{d} (through the mirror m:6)")
    );
    let r = OciReference::parse("h:5/a:2").unwrap();
    assert_eq!(client_reference("h:5", &r).tag(), Some("2"));
    assert_eq!(describe(&r, "h:5"), "oci://h:5/a:2");
}

#[test]
fn short_messages() {
    assert_eq!(short(""), "(no message)");
    assert_eq!(short("one\ntwo"), "one");
    assert_eq!(short(&"x".repeat(300)).len(), 203);
}
