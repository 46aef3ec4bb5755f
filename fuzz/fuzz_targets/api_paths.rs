//! Arbitrary text as a request path: the API's refusal of `.` and `..` segments
//! (`outpost_api::dot_segment`, which percent-decodes each segment) and the validation of the
//! `{package}` segment the routes extract.
//!
//! Asserted: nothing panics; `dot_segment` finds exactly the segments that decode to `.` or
//! `..` under the decoder the router uses for path parameters (`percent-encoding`), and names
//! the first of them as written; once every byte of every segment is percent-encoded (upper
//! or lower case hex), it still finds exactly the literal `.` and `..` segments; a package
//! name or version accepted from a decoded segment is that text, and can never be a path
//! traversal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_api::dot_segment;
use outpost_types::{PackageName, Version};
use percent_encoding::percent_decode_str;

fn is_dot(bytes: &[u8]) -> bool {
    matches!(bytes, b"." | b"..")
}

/// Every byte of every segment as a `%XX` escape.
fn encode_all(path: &str, upper: bool) -> String {
    path.split('/')
        .map(|segment| {
            segment
                .bytes()
                .map(|b| {
                    if upper {
                        format!("%{b:02X}")
                    } else {
                        format!("%{b:02x}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn check_segment(text: &str) {
    if let Ok(name) = PackageName::new(text) {
        assert_eq!(name.as_str(), text);
        assert!(
            !text.contains('/') && !is_dot(text.as_bytes()),
            "name {text:?} accepted"
        );
    }
    if let Ok(version) = Version::new(text) {
        assert_eq!(version.as_str(), text);
        assert!(
            !text.contains('/') && !is_dot(text.as_bytes()),
            "version {text:?} accepted"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let found = dot_segment(path);
    let expected = path
        .split('/')
        .find(|segment| is_dot(&percent_decode_str(segment).collect::<Vec<u8>>()));
    assert_eq!(found.as_deref(), expected, "path {path:?}");

    let literal = path.split('/').any(|segment| is_dot(segment.as_bytes()));
    for upper in [true, false] {
        let encoded = encode_all(path, upper);
        assert_eq!(dot_segment(&encoded).is_some(), literal, "path {encoded:?}");
    }

    for segment in path.split('/') {
        if let Ok(text) = percent_decode_str(segment).decode_utf8() {
            check_segment(&text);
        }
    }
});
