//! Documents for the tests, built in code.

#![allow(dead_code, unreachable_pub)]

use serde_json::{Value, json};

/// A valid document: `web` stable 1.2.0 with a 10 % experiment of 1.3.0 on `role=web`, and
/// `db` stable 2.0.0, at generation 7, expiring in 2027.
pub fn doc_value() -> Value {
    json!({
        "generation": 7,
        "expires": "2027-01-31T00:00:00Z",
        "catalog": {"packages": [
            {"package": "web", "version": "1.2.0", "url": "oci://registry.test/web:1.2.0"},
            {"package": "web", "version": "1.3.0", "url": "oci://registry.test/web:1.3.0"},
            {"package": "db", "version": "2.0.0", "url": "oci://registry.test/db:2.0.0"}
        ]},
        "packages": {
            "web": {
                "stable": "1.2.0",
                "experiment": {
                    "version": "1.3.0",
                    "percent": 10,
                    "selector": {"role": "web"},
                    "health": {"command": ["/bin/true", "arg"], "interval": "10s", "timeout": "5s", "failures": 3, "grace": "30s"},
                    "max_duration": "1h",
                    "auto_promote_after": "20m"
                }
            },
            "db": {"stable": "2.0.0"}
        }
    })
}

pub fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("a JSON value serialises")
}
