//! `SEC[key]` placeholders: found in string values of patches, replaced by the plaintext of
//! the secret `key` just before a patch is applied, and nowhere else.
//!
//! A placeholder runs from `SEC[` to the next `]`; the key is what lies between (it may be
//! empty). Placeholders in paths, object keys and JSON pointers are refused: those reach file
//! names and error messages, where a secret must never go.

use std::collections::{BTreeMap, BTreeSet};

use json_patch::PatchOperation;
use serde_json::Value;

use crate::error::ConfigError;

const OPEN: &str = "SEC[";

/// The keys of the placeholders in `s`, in order.
pub fn placeholders(s: &str) -> impl Iterator<Item = &str> {
    let mut rest = s;
    std::iter::from_fn(move || {
        let start = rest.find(OPEN)? + OPEN.len();
        let len = rest[start..].find(']')?;
        let key = &rest[start..start + len];
        rest = &rest[start + len + 1..];
        Some(key)
    })
}

/// Whether `s` holds a placeholder.
pub fn has_placeholder(s: &str) -> bool {
    placeholders(s).next().is_some()
}

/// Collects the keys used in the string values of `value`; refuses placeholders in keys.
pub(crate) fn scan_value(
    value: &Value,
    index: usize,
    keys: &mut BTreeSet<String>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) => keys.extend(placeholders(s).map(str::to_owned)),
        Value::Array(items) => {
            for item in items {
                scan_value(item, index, keys)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if let Some(key) = placeholders(k).next() {
                    return Err(ConfigError::MisplacedSecret {
                        index,
                        key: key.to_owned(),
                        place: "an object key",
                    });
                }
                scan_value(v, index, keys)?;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// As [`scan_value`] for the `value` of one RFC 6902 operation; refuses placeholders in its
/// `path` and `from` pointers.
pub(crate) fn scan_patch_operation(
    op: &PatchOperation,
    index: usize,
    keys: &mut BTreeSet<String>,
) -> Result<(), ConfigError> {
    let pointer = |p: &str| match placeholders(p).next() {
        Some(key) => Err(ConfigError::MisplacedSecret {
            index,
            key: key.to_owned(),
            place: "a JSON pointer",
        }),
        None => Ok(()),
    };
    match op {
        PatchOperation::Add(o) => {
            pointer(o.path.as_str())?;
            scan_value(&o.value, index, keys)
        }
        PatchOperation::Replace(o) => {
            pointer(o.path.as_str())?;
            scan_value(&o.value, index, keys)
        }
        PatchOperation::Test(o) => {
            pointer(o.path.as_str())?;
            scan_value(&o.value, index, keys)
        }
        PatchOperation::Remove(o) => pointer(o.path.as_str()),
        PatchOperation::Move(o) => {
            pointer(o.from.as_str())?;
            pointer(o.path.as_str())
        }
        PatchOperation::Copy(o) => {
            pointer(o.from.as_str())?;
            pointer(o.path.as_str())
        }
    }
}

/// Replaces every placeholder in the string values of `value` by its secret. The keys were
/// checked by the plan; a key missing here is still refused, by name.
pub(crate) fn substitute_value<S: AsRef<str>>(
    value: &mut Value,
    secrets: &BTreeMap<String, S>,
) -> Result<(), ConfigError> {
    match value {
        Value::String(s) if has_placeholder(s) => *s = substitute_str(s, secrets)?,
        Value::Array(items) => {
            for item in items {
                substitute_value(item, secrets)?;
            }
        }
        Value::Object(map) => {
            for v in map.values_mut() {
                substitute_value(v, secrets)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// As [`substitute_value`] for the value of one RFC 6902 operation.
pub(crate) fn substitute_patch_operation<S: AsRef<str>>(
    op: &mut PatchOperation,
    secrets: &BTreeMap<String, S>,
) -> Result<(), ConfigError> {
    match op {
        PatchOperation::Add(o) => substitute_value(&mut o.value, secrets),
        PatchOperation::Replace(o) => substitute_value(&mut o.value, secrets),
        PatchOperation::Test(o) => substitute_value(&mut o.value, secrets),
        PatchOperation::Remove(_) | PatchOperation::Move(_) | PatchOperation::Copy(_) => Ok(()),
    }
}

fn substitute_str<S: AsRef<str>>(
    s: &str,
    secrets: &BTreeMap<String, S>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(len) = after.find(']') else { break };
        let key = &after[..len];
        let secret = secrets.get(key).ok_or_else(|| ConfigError::MissingSecret {
            key: key.to_owned(),
        })?;
        out.push_str(&rest[..start]);
        out.push_str(secret.as_ref());
        rest = &after[len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_found() {
        let keys: Vec<&str> = placeholders("a SEC[one] b SEC[] SEC[two]] SEC[open").collect();
        assert_eq!(keys, ["one", "", "two"]);
        assert!(!has_placeholder("SEC(x) SEC[x"));
    }

    #[test]
    fn substitution_is_per_string_value_and_not_textual() {
        let secrets = BTreeMap::from([
            ("k".to_owned(), "va\"l}ue".to_owned()),
            ("other".to_owned(), "2".to_owned()),
        ]);
        let mut v = json!({"a": "SEC[k]", "b": ["x-SEC[k]-SEC[other]"], "SEC": 1, "n": 3});
        substitute_value(&mut v, &secrets).unwrap();
        assert_eq!(
            v,
            json!({"a": "va\"l}ue", "b": ["x-va\"l}ue-2"], "SEC": 1, "n": 3})
        );
        let mut missing = json!("SEC[nope]");
        let err = substitute_value(&mut missing, &secrets).unwrap_err();
        assert!(matches!(err, ConfigError::MissingSecret { ref key } if key == "nope"));
    }

    #[test]
    fn placeholders_outside_values_are_refused() {
        let mut keys = BTreeSet::new();
        let err = scan_value(&json!({"SEC[k]": 1}), 2, &mut keys).unwrap_err();
        assert_eq!(
            err.to_string(),
            "file operation 2: placeholder SEC[k] in an object key; secrets only go in values"
        );
        let op: PatchOperation =
            serde_json::from_value(json!({"op": "add", "path": "/SEC[k]", "value": 1})).unwrap();
        assert!(scan_patch_operation(&op, 0, &mut keys).is_err());
        let op: PatchOperation =
            serde_json::from_value(json!({"op": "add", "path": "/a", "value": {"x": "SEC[k]"}}))
                .unwrap();
        scan_patch_operation(&op, 0, &mut keys).unwrap();
        assert_eq!(keys, BTreeSet::from(["k".to_owned()]));
    }
}
