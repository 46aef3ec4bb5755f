//! Guards against checks that would take the agent's process down with them: `os._exit()`,
//! `os.fork()` without `exec`, and a recursion limit raised past what a runner thread's stack
//! holds. Installed once, when the runtime starts (see `SECURITY.md` for what stays
//! undefended).
//!
//! * **`os._exit(n)`** (and `posix._exit`) raises `ProcessExitRefused` (a `RuntimeError`) in
//!   the agent's process, so the check's run fails with that error instead of ending the
//!   agent. In a forked child it exits as it always did, so `multiprocessing` and fork-then-exit
//!   code keep working.
//! * **`os.fork()`**: a child may run Python (`exec`, work, `os._exit`), but it must never run
//!   the agent's own code, whose other threads do not exist in it. When Python returns to the
//!   agent in a process that is not the agent (a child that fell off the end of the check),
//!   the child exits at once with [`FORKED_CHILD_EXIT`].
//! * **Recursion**: `sys.setrecursionlimit` is capped at [`RECURSION_LIMIT_CAP`], and runner
//!   threads get [`RUNNER_STACK_SIZE`] bytes of stack, so that unbounded recursion raises
//!   `RecursionError` rather than overflow the thread's stack (which would kill the process).

use pyo3::prelude::*;

use crate::error::Error;
use crate::pyutil::capture;

/// Exit status of a forked child of a check that returned into the agent's code (the BSD
/// `EX_SOFTWARE`).
pub const FORKED_CHILD_EXIT: i32 = 70;

/// The highest recursion limit a check may set; higher requests are lowered to it.
pub const RECURSION_LIMIT_CAP: u32 = 2000;

/// Stack size of the threads that run checks: room for [`RECURSION_LIMIT_CAP`] levels of
/// recursion through C code (`__repr__`, `__eq__`, `sorted(key=...)`, each of which costs
/// interpreter frames on the machine stack) with a wide margin. Only touched pages cost
/// memory.
pub const RUNNER_STACK_SIZE: usize = 16 << 20;

const GUARDS: &str = r#"
import os, posix, sys

_real_exit = posix._exit
_agent_pid = os.getpid()
_set_limit = sys.setrecursionlimit


class ProcessExitRefused(RuntimeError):
    """Raised in place of ending the agent's process."""


def _exit(status, /):
    if os.getpid() != _agent_pid:
        _real_exit(status)
    raise ProcessExitRefused(
        f"os._exit({status!r}) was refused: a check runs inside the agent's process and "
        "cannot end it (raise an exception to fail the run)"
    )


def setrecursionlimit(limit, /):
    if not isinstance(limit, int):
        return _set_limit(limit)
    return _set_limit(min(limit, CAP))


def forked_child_returned():
    try:
        os.write(
            2,
            b"outpost: a check forked the agent and the child returned into the agent's code; "
            b"the child exits with status %d (a child must exec or call os._exit)\n" % EXIT,
        )
    finally:
        _real_exit(EXIT)


os._exit = _exit
posix._exit = _exit
sys.setrecursionlimit = setrecursionlimit
_set_limit(min(sys.getrecursionlimit(), CAP))
"#;

/// Installs the guards (module `_outpost_guards`). Called once with the GIL held.
pub(crate) fn install(py: Python<'_>) -> Result<(), Error> {
    let fail = |e: PyErr| Error::Python {
        context: "installing the check guards".into(),
        source: capture(py, &e),
    };
    let module = PyModule::new(py, "_outpost_guards").map_err(fail)?;
    module.add("CAP", RECURSION_LIMIT_CAP).map_err(fail)?;
    module.add("EXIT", FORKED_CHILD_EXIT).map_err(fail)?;
    let code = std::ffi::CString::new(GUARDS)
        .map_err(|e| fail(pyo3::exceptions::PyValueError::new_err(e.to_string())))?;
    py.run(&code, Some(&module.dict()), None).map_err(fail)?;
    py.import("sys")
        .and_then(|sys| sys.getattr("modules"))
        .and_then(|m| m.set_item("_outpost_guards", &module))
        .map_err(fail)?;
    PID.set(std::process::id()).ok();
    Ok(())
}

static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();

/// Called with the GIL held whenever Python code of a check returns to the agent: in a forked
/// child of the agent, exits at once with [`FORKED_CHILD_EXIT`] (through the interpreter's
/// `_exit`, which runs nothing of the parent's). Does nothing in the agent itself.
pub(crate) fn after_check_code(py: Python<'_>) {
    let Some(pid) = PID.get() else {
        return;
    };
    if std::process::id() == *pid {
        return;
    }
    let _ = py
        .import("_outpost_guards")
        .and_then(|m| m.call_method0("forked_child_returned"));
    // Unreachable unless the module was tampered with; never go on as the agent.
    std::process::abort();
}
