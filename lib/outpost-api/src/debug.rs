//! `/debug/vars`: a JSON object built from named providers, in the manner of Go's expvar.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde_json::{Map, Value};

use crate::json::Json;
use crate::module::Module;

type Provider = Arc<dyn Fn() -> Value + Send + Sync>;

/// Named providers of debug values. Cheap to clone (clones share the providers).
///
/// Each provider is called on every `GET /debug/vars`; its value appears under its name. A new
/// set comes with `cmdline` (the process's arguments), as expvar does.
#[derive(Clone)]
pub struct DebugVars {
    providers: Arc<RwLock<BTreeMap<String, Provider>>>,
}

impl std::fmt::Debug for DebugVars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .providers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        f.debug_struct("DebugVars")
            .field("providers", &names)
            .finish()
    }
}

impl Default for DebugVars {
    fn default() -> Self {
        Self::new()
    }
}

impl DebugVars {
    /// A set holding the `cmdline` provider.
    pub fn new() -> Self {
        let vars = Self {
            providers: Arc::new(RwLock::new(BTreeMap::new())),
        };
        vars.register("cmdline", || {
            Value::Array(
                std::env::args_os()
                    .map(|a| Value::String(a.to_string_lossy().into_owned()))
                    .collect(),
            )
        });
        vars
    }

    /// Adds (or replaces) the provider called `name`.
    pub fn register(&self, name: &str, provider: impl Fn() -> Value + Send + Sync + 'static) {
        self.providers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), Arc::new(provider));
    }

    /// Removes the provider called `name`; returns whether there was one.
    pub fn unregister(&self, name: &str) -> bool {
        self.providers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
            .is_some()
    }

    /// Calls every provider (outside the lock, so a provider may use this set) and returns
    /// the object, keys in name order.
    pub fn render(&self) -> Value {
        let providers: Vec<(String, Provider)> = self
            .providers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect();
        let mut object = Map::new();
        for (name, provider) in providers {
            object.insert(name, provider());
        }
        Value::Object(object)
    }

    /// The ready-made `debug` module: `GET /debug/vars`.
    pub fn module(&self) -> Module {
        let vars = self.clone();
        Module::new("debug").get("/vars", move || {
            let vars = vars.clone();
            async move { Json(vars.render()) }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_render_in_name_order() {
        let vars = DebugVars::new();
        vars.register("zeta", || Value::from(1));
        vars.register("alpha", || serde_json::json!({"a": [1, 2]}));
        let rendered = vars.render();
        let keys: Vec<&String> = rendered.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["alpha", "cmdline", "zeta"]);
        assert_eq!(rendered["alpha"], serde_json::json!({"a": [1, 2]}));
        assert!(rendered["cmdline"].is_array());
        assert!(vars.unregister("zeta"));
        assert!(!vars.unregister("zeta"));
        vars.register("alpha", || Value::Null);
        assert_eq!(vars.render()["alpha"], Value::Null);
    }
}
