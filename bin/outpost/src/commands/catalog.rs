//! Reading and checking a catalog before `catalog set` sends it.
//!
//! The API accepts unknown keys (wire compatibility with the Datadog installer), so a typo such
//! as `"pakages"` would silently set an empty catalog there. The command line is stricter: an
//! unknown key, at the top or in an entry, is refused with the closest known key; an entry
//! whose field has the wrong type names its index; an empty catalog is refused unless asked
//! for. Nothing is sent when the catalog is refused.

use std::io::Read as _;

use outpost_types::wire::{Catalog, CatalogEntry};
use serde_json::Value;

/// The keys of the catalog document.
const TOP_KEYS: &[&str] = &["packages"];
/// The keys of one entry (`CatalogEntry`).
const ENTRY_KEYS: &[&str] = &[
    "package", "version", "url", "sha256", "size", "platform", "arch",
];

/// Reads a catalog: `-` is stdin, a value starting with `{` or `[` is the JSON itself (as the
/// Datadog installer's `set-catalog` takes it), anything else a file path. Returns the
/// document as it will be sent.
///
/// # Errors
/// A message naming the source when it cannot be read, is not JSON, or fails [`check`].
pub(crate) fn read(source: &str, allow_empty: bool) -> Result<(Value, usize), String> {
    let (what, text) = if source == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("reading stdin: {e}"))?;
        ("stdin".to_string(), text)
    } else if matches!(source.trim_start().chars().next(), Some('{' | '[')) {
        ("the argument".to_string(), source.to_string())
    } else {
        let text = fs_err::read_to_string(source).map_err(|e| {
            format!("{e}; the catalog is a file, `-` for stdin, or the JSON itself")
        })?;
        (source.to_string(), text)
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("invalid catalog JSON in {what}: {e}"))?;
    let count =
        check(&value, allow_empty).map_err(|e| format!("invalid catalog in {what}: {e}"))?;
    Ok((value, count))
}

/// Checks a catalog document strictly and returns its number of entries.
///
/// # Errors
/// The document is not an object; a key is unknown (with the closest known key); an entry is
/// not an object, has an unknown key or a field of the wrong type (named by index); the
/// catalog is empty and `allow_empty` is false.
pub(crate) fn check(value: &Value, allow_empty: bool) -> Result<usize, String> {
    let Value::Object(top) = value else {
        return Err(format!(
            "expected an object {{\"packages\": [...]}}, found {}",
            kind(value)
        ));
    };
    for key in top.keys() {
        unknown_key(key, TOP_KEYS)?;
    }
    let entries = match top.get("packages") {
        None | Some(Value::Null) => &Vec::new(),
        Some(Value::Array(entries)) => entries,
        Some(other) => {
            return Err(format!(
                "\"packages\" must be an array, found {}",
                kind(other)
            ));
        }
    };
    for (i, entry) in entries.iter().enumerate() {
        let Value::Object(fields) = entry else {
            return Err(format!(
                "catalog entry {i}: expected an object, found {}",
                kind(entry)
            ));
        };
        for key in fields.keys() {
            unknown_key(key, ENTRY_KEYS).map_err(|e| format!("catalog entry {i}: {e}"))?;
        }
        serde_json::from_value::<CatalogEntry>(entry.clone())
            .map_err(|e| format!("catalog entry {i}: {e}"))?;
    }
    if entries.is_empty() && !allow_empty {
        return Err(
            "the catalog has no entries (pass --allow-empty to clear the catalog)".to_string(),
        );
    }
    // Deserialises now: the same rules the daemon applies (names, versions, URLs).
    let catalog: Catalog = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    catalog.validate().map_err(|e| e.to_string())?;
    Ok(entries.len())
}

fn unknown_key(key: &str, known: &[&str]) -> Result<(), String> {
    if known.contains(&key) {
        return Ok(());
    }
    let expected = match closest(key, known) {
        Some(k) => format!("did you mean \"{k}\"?"),
        None => format!(
            "expected one of {}",
            known
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Err(format!("unknown field \"{key}\", {expected}"))
}

/// The known key nearest to `key` by edit distance, if it is near enough to be a typo.
fn closest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (distance(key, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, counting an adjacent transposition as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "oci://r.io/p:1";

    #[test]
    fn typos_are_refused_with_the_closest_key() {
        let err = check(&json!({"pakages": []}), true).unwrap_err();
        assert_eq!(err, "unknown field \"pakages\", did you mean \"packages\"?");
        let entry = json!({"package": "p", "version": "1", "url": URL, "sha265": "x"});
        let err = check(&json!({"packages": [entry]}), false).unwrap_err();
        assert_eq!(
            err,
            "catalog entry 0: unknown field \"sha265\", did you mean \"sha256\"?"
        );
        let err = check(&json!({"zzzzzzzz": 1}), true).unwrap_err();
        assert_eq!(
            err,
            "unknown field \"zzzzzzzz\", expected one of \"packages\""
        );
    }

    #[test]
    fn wrong_types_name_the_entry() {
        let good = json!({"package": "p", "version": "1", "url": URL});
        let bad = json!({"package": "p", "version": 1.5, "url": URL});
        let err = check(&json!({"packages": [good, bad]}), false).unwrap_err();
        assert!(err.starts_with("catalog entry 1: invalid type"), "{err}");
        let err = check(&json!([]), true).unwrap_err();
        assert_eq!(
            err,
            "expected an object {\"packages\": [...]}, found an array"
        );
        let err = check(&json!({"packages": {}}), true).unwrap_err();
        assert_eq!(err, "\"packages\" must be an array, found an object");
    }

    #[test]
    fn empty_only_when_allowed() {
        assert!(check(&json!({"packages": []}), false).is_err());
        assert_eq!(check(&json!({"packages": []}), true), Ok(0));
        assert_eq!(check(&json!({}), true), Ok(0));
        let entry = json!({"package": "p", "version": "1", "url": URL});
        assert_eq!(check(&json!({"packages": [entry]}), false), Ok(1));
    }

    #[test]
    fn distances() {
        assert_eq!(distance("sha265", "sha256"), 1);
        assert_eq!(distance("pakages", "packages"), 1);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(closest("verison", ENTRY_KEYS), Some("version"));
        assert_eq!(closest("x", ENTRY_KEYS), None);
    }

    #[test]
    fn sources() {
        assert!(read(r#"{"packages": []}"#, true).is_ok());
        let err = read("[]", true).unwrap_err();
        assert!(
            err.starts_with("invalid catalog in the argument: expected an object"),
            "{err}"
        );
        let err = read("{oops", true).unwrap_err();
        assert!(
            err.contains("invalid catalog JSON in the argument"),
            "{err}"
        );
        let err = read("/definitely/not/here.json", true).unwrap_err();
        assert!(err.contains("/definitely/not/here.json"), "{err}");
    }
}
