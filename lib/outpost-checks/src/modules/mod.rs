//! The builtin modules checks import: `aggregator`, `datadog_agent`, `util` and `_util`.
//! They are registered with `PyImport_AppendInittab` before the interpreter starts, so
//! `import aggregator` inside datadog-checks-base finds them and the base runs in agent mode.

pub(crate) mod aggregator;
pub(crate) mod datadog_agent;
pub(crate) mod util;

/// Registers the four modules. Must run before the interpreter is initialised.
pub(crate) fn register() {
    use self::aggregator::aggregator;
    use self::datadog_agent::datadog_agent;
    use self::util::{private_util, util};
    pyo3::append_to_inittab!(aggregator);
    pyo3::append_to_inittab!(datadog_agent);
    pyo3::append_to_inittab!(util);
    pyo3::append_to_inittab!(private_util);
}
