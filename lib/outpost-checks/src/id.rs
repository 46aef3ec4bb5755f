//! Check IDs, built the way the Datadog agent's `checkid.BuildID` builds them.
//!
//! ```text
//! hash = FNV-1 64 (not 1a) over
//!          big-endian 8 bytes of the config digest,
//!          then the instance's canonical bytes,
//!          then init_config's canonical bytes
//! id   = "<check>:<hash>"  or  "<check>:<instance name>:<hash>"
//! ```
//! `hash` is lowercase hex without zero padding. The instance name is the instance's `name`
//! key, else its `namespace` key, when it is a non-empty string.
//!
//! The **config digest** identifies the whole configuration file a set of instances comes
//! from: FNV-1 64 over `outpost-config-v1`, NUL, the check name, NUL, the canonical bytes of
//! `init_config`, then NUL and the canonical bytes of each instance in file order (see
//! [`Value::canonical_bytes`]). It depends on the parsed content only: comments, blank lines,
//! quoting style and key order do not change it; any change of a value does. Like the Go
//! agent's digest, it covers every instance of the file, so adding an instance gives every
//! instance of that file a new ID (and a fresh persistent cache).
//!
//! The IDs are therefore stable across restarts for the same configuration and differ between
//! different instances. Python code relies on the format: `persistent_cache_id()` is the last
//! `:`-separated segment and the cache-key namespace is everything before it.

use std::fmt;

use serde::Serialize;

use crate::value::Value;

/// FNV-1 64-bit offset basis.
const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1 64-bit prime.
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The FNV-1 (multiply, then xor) 64-bit hash, as Go's `hash/fnv.New64`.
#[derive(Debug, Clone, Copy)]
pub struct Fnv1_64(u64);

impl Default for Fnv1_64 {
    fn default() -> Self {
        Self(FNV64_OFFSET)
    }
}

impl Fnv1_64 {
    /// A fresh hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.wrapping_mul(FNV64_PRIME);
            self.0 ^= u64::from(b);
        }
    }

    /// The hash of everything written so far.
    pub fn finish(&self) -> u64 {
        self.0
    }

    /// One-shot hash of `bytes`.
    pub fn hash(bytes: &[u8]) -> u64 {
        let mut h = Self::new();
        h.write(bytes);
        h.finish()
    }
}

/// The digest of one configuration file's content for one check (see the module docs).
pub fn config_digest(check_name: &str, init_config: &Value, instances: &[Value]) -> u64 {
    let mut h = Fnv1_64::new();
    h.write(b"outpost-config-v1\0");
    h.write(check_name.as_bytes());
    h.write(b"\0");
    h.write(&init_config.canonical_bytes());
    for instance in instances {
        h.write(b"\0");
        h.write(&instance.canonical_bytes());
    }
    h.finish()
}

/// The ID of one check instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct CheckId(String);

impl CheckId {
    /// Builds the ID of `instance` of check `check_name` from a configuration whose digest is
    /// `digest` (see the module docs).
    pub fn build(check_name: &str, digest: u64, instance: &Value, init_config: &Value) -> Self {
        let mut h = Fnv1_64::new();
        h.write(&digest.to_be_bytes());
        h.write(&instance.canonical_bytes());
        h.write(&init_config.canonical_bytes());
        let hash = h.finish();
        match instance_name(instance) {
            Some(name) => Self(format!("{check_name}:{name}:{hash:x}")),
            None => Self(format!("{check_name}:{hash:x}")),
        }
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The check name (first segment).
    pub fn check_name(&self) -> &str {
        self.0.split(':').next().unwrap_or("")
    }

    /// The hash segment (what `persistent_cache_id()` returns in Python).
    pub fn hash_part(&self) -> &str {
        self.0.rsplit(':').next().unwrap_or("")
    }
}

impl fmt::Display for CheckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for CheckId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The instance's `name`, else its `namespace`, when a non-empty string.
fn instance_name(instance: &Value) -> Option<&str> {
    ["name", "namespace"]
        .into_iter()
        .filter_map(|k| instance.get(k).and_then(Value::as_str))
        .find(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(t: &str) -> Value {
        Value::from_yaml(t).unwrap()
    }

    #[test]
    fn fnv1_64_test_vectors() {
        // Published FNV-1 (not 1a) 64-bit vectors.
        assert_eq!(Fnv1_64::hash(b""), 0xcbf29ce484222325);
        assert_eq!(Fnv1_64::hash(b"a"), 0xaf63bd4c8601b7be);
        assert_eq!(Fnv1_64::hash(b"foobar"), 0x340d8765a4dda9c2);
        assert_eq!(Fnv1_64::hash(b"chongo was here!\n"), 0xe0aca20b624e4235);
        // FNV-1a of "a" would be 0xaf63dc4c8601ec8c.
        assert_ne!(Fnv1_64::hash(b"a"), 0xaf63dc4c8601ec8c);
        // Incremental writes equal one write.
        let mut h = Fnv1_64::new();
        h.write(b"foo");
        h.write(b"bar");
        assert_eq!(h.finish(), Fnv1_64::hash(b"foobar"));
    }

    #[test]
    fn id_layout_matches_build_id() {
        // Computed independently: FNV-1 64 of be64(0x0123456789abcdef) ++ {"host":"a"} ++ {}.
        let id = CheckId::build("http", 0x0123_4567_89ab_cdef, &yaml("host: a"), &yaml("{}"));
        assert_eq!(id.as_str(), "http:b602105f943553cc");
        // Digest 0, instance "x", empty init_config: 0xe604823a249029c7.
        let id = CheckId::build("c", 0, &Value::Str("x".into()), &Value::Map(vec![]));
        let expected = {
            let mut h = Fnv1_64::new();
            h.write(&[0; 8]);
            h.write(br#""x""#);
            h.write(b"{}");
            h.finish()
        };
        assert_eq!(id.as_str(), format!("c:{expected:x}"));
    }

    #[test]
    fn hex_has_no_zero_padding() {
        // Search a digest whose hash has a leading zero nibble and check the width.
        let inst = yaml("a: 1");
        let init = Value::Null;
        let padded = (0u64..10_000)
            .map(|d| CheckId::build("c", d, &inst, &init))
            .find(|id| id.hash_part().len() < 16)
            .expect("one of 10000 hashes starts with a zero nibble");
        assert!(!padded.hash_part().starts_with('0'));
        assert_eq!(
            padded.hash_part(),
            padded.hash_part().to_lowercase(),
            "lowercase"
        );
    }

    #[test]
    fn instance_names_go_in_the_middle() {
        let init = Value::Map(vec![]);
        let named = CheckId::build("http", 7, &yaml("name: site\nurl: x"), &init);
        assert!(named.as_str().starts_with("http:site:"), "{named}");
        assert_eq!(named.check_name(), "http");
        let ns = CheckId::build("http", 7, &yaml("namespace: ns\nurl: x"), &init);
        assert!(ns.as_str().starts_with("http:ns:"), "{ns}");
        let empty = CheckId::build("http", 7, &yaml("name: ''\nurl: x"), &init);
        assert_eq!(empty.as_str().matches(':').count(), 1, "{empty}");
    }

    #[test]
    fn stable_and_distinct() {
        let init = yaml("service: demo");
        let a = yaml("host: a\nport: 1");
        let b = yaml("host: b\nport: 1");
        let digest = config_digest("c", &init, &[a.clone(), b.clone()]);
        let id_a = CheckId::build("c", digest, &a, &init);
        let id_b = CheckId::build("c", digest, &b, &init);
        assert_ne!(id_a, id_b);
        // Same content, another spelling of the file: same digest, same IDs.
        let a2 = yaml("port: 1\nhost: \"a\"  # comment");
        let b2 = yaml("{port: 1, host: b}");
        assert_eq!(
            digest,
            config_digest("c", &yaml("service: 'demo'"), &[a2, b2])
        );
        // A changed value changes the digest.
        assert_ne!(
            digest,
            config_digest("c", &yaml("service: other"), &[a.clone(), b])
        );
        // The check name is part of the digest.
        assert_ne!(
            digest,
            config_digest("d", &init, &[a, yaml("host: b\nport: 1")])
        );
    }
}
