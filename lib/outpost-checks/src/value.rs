//! A YAML value tree that keeps what Python needs: key order, integers of any size apart from
//! floats, and non-string keys. Configuration files are parsed into it in Rust (serde-saphyr)
//! and converted to Python objects directly, so no subprocess and no Python YAML parser is
//! involved.
//!
//! Plain scalars resolve as in YAML 1.1, which is what the Datadog agent's Go YAML reader
//! applies before handing instances to Python: `y`/`n`/`yes`/`no`/`on`/`off` are booleans,
//! `0755` is octal, `0x1f` hex, `.inf`/`.nan` floats, and an integer too large for 64 bits
//! becomes a float. Quote a value to keep it a string. Dates stay strings.

use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or empty.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (any YAML integer fits: the parser yields at most 128 bits).
    Int(i128),
    /// A float, including the non-finite ones.
    Float(f64),
    /// A string.
    Str(String),
    /// `!!binary` data.
    Bytes(Vec<u8>),
    /// A sequence.
    Seq(Vec<Value>),
    /// A mapping, in document order.
    Map(Vec<(Value, Value)>),
}

impl Value {
    /// The entry of a mapping whose key is the string `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the node's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "binary data",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Parses one YAML document. An empty document is `Null`.
    pub fn from_yaml(text: &str) -> Result<Value, serde_saphyr::Error> {
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        let mut options = serde_saphyr::Options::default();
        options.legacy_octal_numbers = true;
        options.non_finite_float_policy = serde_saphyr::NonFiniteFloatPolicy::PassThrough;
        options.with_snippet = false;
        let value: Option<Value> = serde_saphyr::from_str_with_options(text, options)?;
        Ok(value.unwrap_or(Value::Null))
    }

    /// The canonical bytes of this value, the input of check IDs and config digests.
    ///
    /// The form is JSON-like and stable across processes and releases: `null`, `true`,
    /// `false`; integers in decimal; floats as `f:` followed by Rust's shortest round-trip
    /// form (`f:1.5`, `f:inf`, `f:NaN`); strings as JSON strings; binary as `b:` and lowercase
    /// hex; `[a,b]`; mappings as `{k:v,...}` with entries **sorted by the canonical bytes of
    /// their keys**, so that reordering keys in a file does not change an ID.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_canonical(&mut out);
        out
    }

    fn write_canonical(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
            Value::Float(f) => out.extend_from_slice(format!("f:{f:?}").as_bytes()),
            Value::Str(s) => {
                // serde_json's string escaping is fixed by the JSON grammar: stable.
                let quoted = serde_json::Value::String(s.clone()).to_string();
                out.extend_from_slice(quoted.as_bytes());
            }
            Value::Bytes(b) => {
                out.extend_from_slice(b"b:");
                for byte in b {
                    out.extend_from_slice(format!("{byte:02x}").as_bytes());
                }
            }
            Value::Seq(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write_canonical(out);
                }
                out.push(b']');
            }
            Value::Map(entries) => {
                let mut rendered: Vec<(Vec<u8>, &Value)> = entries
                    .iter()
                    .map(|(k, v)| (k.canonical_bytes(), v))
                    .collect();
                rendered.sort_by(|a, b| a.0.cmp(&b.0));
                out.push(b'{');
                for (i, (k, v)) in rendered.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&k);
                    out.push(b':');
                    v.write_canonical(out);
                }
                out.push(b'}');
            }
        }
    }

    /// Converts to the Python object `yaml.safe_load` would give: `dict` (insertion order
    /// kept), `list`, `int`, `float`, `bool`, `None`, `str`, `bytes`.
    ///
    /// Fails (with Python's `TypeError`) when a mapping key is a list or a mapping, which
    /// Python cannot hash; PyYAML refuses those too.
    pub fn to_python<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Value::Null => py.None().into_bound(py),
            Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
            Value::Int(i) => i.into_pyobject(py)?.into_any(),
            Value::Float(f) => f.into_pyobject(py)?.into_any(),
            Value::Str(s) => s.into_pyobject(py)?.into_any(),
            Value::Bytes(b) => PyBytes::new(py, b).into_any(),
            Value::Seq(items) => {
                let list = PyList::empty(py);
                for item in items {
                    list.append(item.to_python(py)?)?;
                }
                list.into_any()
            }
            Value::Map(entries) => {
                let dict = PyDict::new(py);
                for (k, v) in entries {
                    dict.set_item(k.to_python(py)?, v.to_python(py)?)?;
                }
                dict.into_any()
            }
        })
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} is too large")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((k, v)) = map.next_entry()? {
            entries.push((k, v));
        }
        Ok(Value::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        Value::from_yaml(text).unwrap()
    }

    #[test]
    fn scalars_resolve_like_yaml_1_1() {
        let v = parse(
            "a: 1\nb: 1.5\nc: yes\nd: no\ne: ~\nf: hello\ng: '1'\nh: 0755\ni: .inf\nj: -.inf\n\
             k: 18446744073709551616\nl: 0x1f\nm: on\nexp: 1e3\n",
        );
        assert_eq!(v.get("a"), Some(&Value::Int(1)));
        assert_eq!(v.get("b"), Some(&Value::Float(1.5)));
        assert_eq!(v.get("c"), Some(&Value::Bool(true)));
        assert_eq!(v.get("d"), Some(&Value::Bool(false)));
        assert_eq!(v.get("e"), Some(&Value::Null));
        assert_eq!(v.get("f"), Some(&Value::Str("hello".into())));
        assert_eq!(v.get("g"), Some(&Value::Str("1".into())));
        assert_eq!(v.get("h"), Some(&Value::Int(0o755)));
        assert_eq!(v.get("i"), Some(&Value::Float(f64::INFINITY)));
        assert_eq!(v.get("j"), Some(&Value::Float(f64::NEG_INFINITY)));
        assert_eq!(v.get("k"), Some(&Value::Float(18446744073709551616.0)));
        assert_eq!(v.get("l"), Some(&Value::Int(31)));
        assert_eq!(v.get("m"), Some(&Value::Bool(true)));
        assert_eq!(v.get("exp"), Some(&Value::Float(1000.0)));
    }

    #[test]
    fn order_and_non_string_keys_are_kept() {
        let v = parse("z: 1\na: 2\n3: three\ntrue: t\n");
        let Value::Map(entries) = v else {
            panic!("not a map")
        };
        let keys: Vec<_> = entries.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![
                Value::Str("z".into()),
                Value::Str("a".into()),
                Value::Int(3),
                Value::Bool(true)
            ]
        );
    }

    #[test]
    fn anchors_and_merges_expand() {
        let v = parse("base: &b {x: 1}\nother:\n  <<: *b\n  z: 2\n");
        let other = v.get("other").unwrap();
        assert_eq!(other.get("x"), Some(&Value::Int(1)));
        assert_eq!(other.get("z"), Some(&Value::Int(2)));
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse(""), Value::Null);
        assert_eq!(parse("# only a comment\n"), Value::Null);
    }

    #[test]
    fn errors_carry_the_line() {
        let e = Value::from_yaml("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        let loc = e.location().expect("a location");
        assert!(loc.line() >= 2, "line {}", loc.line());
        let dup = Value::from_yaml("a: 1\na: 2\n").unwrap_err();
        assert_eq!(dup.location().map(|l| l.line()), Some(2), "{dup}");
    }

    #[test]
    fn canonical_bytes_ignore_key_order_and_keep_types() {
        let a = parse("b: 1\na: [x, 2]\n");
        let b = parse("a: [x, 2]\nb: 1\n");
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(a.canonical_bytes(), br#"{"a":["x",2],"b":1}"#.to_vec());
        // "1" and 1 and 1.0 differ.
        let s = parse("a: '1'\n").canonical_bytes();
        let i = parse("a: 1\n").canonical_bytes();
        let f = parse("a: 1.0\n").canonical_bytes();
        assert_ne!(s, i);
        assert_ne!(i, f);
        assert_eq!(f, br#"{"a":f:1.0}"#.to_vec());
        assert_eq!(parse("~").canonical_bytes(), b"null".to_vec());
    }

    #[test]
    fn converts_to_python_objects() {
        Python::attach(|py| {
            let v = parse(
                "name: x\nnum: 3\nf: 2.5\nok: true\nnone: null\nlist: [1, a]\nnested: {k: v}\n7: seven\nflag: n\nquoted: 'n'\n",
            );
            let obj = v.to_python(py).unwrap();
            let globals = PyDict::new(py);
            globals.set_item("v", obj).unwrap();
            let ok: bool = py
                .eval(
                    c"v == {'name': 'x', 'num': 3, 'f': 2.5, 'ok': True, 'none': None, 'list': [1, 'a'], 'nested': {'k': 'v'}, 7: 'seven', 'flag': False, 'quoted': 'n'} and type(v['num']) is int and list(v)[0] == 'name'",
                    Some(&globals),
                    None,
                )
                .unwrap()
                .extract()
                .unwrap();
            assert!(ok);
            let unhashable = parse("? [1, 2]\n: x\n");
            assert!(unhashable.to_python(py).is_err());
        });
    }
}
