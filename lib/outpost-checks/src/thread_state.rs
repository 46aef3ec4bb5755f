//! Python thread states that live as long as their thread.
//!
//! The embedding API creates a Python thread state when a thread without one attaches, and
//! destroys it when the thread detaches: for a thread that runs a check now and then, that is,
//! per run, an allocation of the thread state, an `mmap`/`munmap` of the 16 KiB frame stack
//! (with the TLB shootdown that `munmap` sends to the other cores) and a page fault. Like
//! rtloader's goroutines pinned to their OS thread, a thread that calls [`pin`] creates its
//! thread state once and keeps it (detached, the GIL released) until the thread ends; later
//! attaches on that thread find it and only take the GIL.
//!
//! # Guarantees
//! * [`pin`] is safe to call from any thread at any time: it does nothing before the
//!   interpreter is initialised, nor on a thread that holds the GIL (one that is attached), so
//!   it never takes the GIL twice or leaves it held.
//! * When the thread ends, its thread state is released (the GIL is taken for that, briefly).

use std::cell::Cell;

use pyo3::ffi;

/// The thread state this thread keeps, and the `PyGILState_Ensure` result to release it with.
struct Pinned(Cell<Option<(ffi::PyGILState_STATE, *mut ffi::PyThreadState)>>);

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some((state, tstate)) = self.0.take() {
            // SAFETY: `tstate` is this thread's own, saved by `PyEval_SaveThread` in `pin` and
            // never restored since; the interpreter is never finalized, so restoring it (taking
            // the GIL) then releasing the `PyGILState_Ensure` that created it (which deletes it
            // and drops the GIL) is the documented pairing.
            unsafe {
                ffi::PyEval_RestoreThread(tstate);
                ffi::PyGILState_Release(state);
            }
        }
    }
}

thread_local! {
    static PINNED: Pinned = const { Pinned(Cell::new(None)) };
}

/// Gives this thread a Python thread state that outlives its single attaches (see the module
/// docs). Returns true when this thread has one (now or from an earlier call); false, doing
/// nothing, before the interpreter is initialised, on a thread that is attached, or while the
/// thread is ending.
pub fn pin() -> bool {
    PINNED
        .try_with(|p| {
            if p.0.get().is_some() {
                return true;
            }
            // SAFETY: both only read the interpreter's global state; `PyGILState_Check` is
            // called only once the interpreter is initialised.
            let ready = unsafe { ffi::Py_IsInitialized() != 0 && ffi::PyGILState_Check() == 0 };
            if !ready {
                return false;
            }
            // SAFETY: the interpreter is initialised and this thread does not hold the GIL
            // (checked above). `PyGILState_Ensure` creates the thread state and takes the GIL;
            // `PyEval_SaveThread` releases the GIL and keeps the thread state for later
            // attaches of this thread.
            let pinned = unsafe {
                let state = ffi::PyGILState_Ensure();
                (state, ffi::PyEval_SaveThread())
            };
            p.0.set(Some(pinned));
            true
        })
        .unwrap_or(false)
}

/// True when this thread keeps a pinned thread state.
pub fn is_pinned() -> bool {
    PINNED.try_with(|p| p.0.get().is_some()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyo3::Python;
    use pyo3::types::PyAnyMethods as _;

    fn interpreter() {
        match crate::interpreter::start(None, false) {
            Ok(()) | Err(crate::Error::AlreadyStarted { .. }) => {}
            Err(e) => panic!("the bare interpreter starts: {e}"),
        }
    }

    fn eval_on_this_thread() -> i64 {
        Python::attach(|py| {
            py.eval(c"6 * 7", None, None)
                .and_then(|v| v.extract::<i64>())
                .expect("evaluates")
        })
    }

    #[test]
    fn a_pinned_thread_keeps_its_state_and_still_attaches() {
        interpreter();
        std::thread::spawn(|| {
            assert!(!is_pinned());
            assert!(pin(), "a detached thread gets a thread state");
            assert!(is_pinned());
            assert!(pin(), "pinning twice keeps the first one");
            // Attaches find the kept state; the GIL is released after each.
            assert_eq!(eval_on_this_thread(), 42);
            assert_eq!(eval_on_this_thread(), 42);
            // SAFETY: plain query.
            assert_eq!(unsafe { ffi::PyGILState_Check() }, 0, "the GIL is not held");
        })
        .join()
        .expect("the pinned thread ends cleanly, releasing its state");
        // Another thread attaches after the first one released its state.
        std::thread::spawn(|| assert_eq!(eval_on_this_thread(), 42))
            .join()
            .expect("attaches after a pinned thread ended");
    }

    #[test]
    fn an_attached_thread_is_left_alone() {
        interpreter();
        std::thread::spawn(|| {
            let pinned = Python::attach(|_py| pin());
            assert!(!pinned, "a thread holding the GIL is not pinned");
            assert!(!is_pinned());
            assert_eq!(eval_on_this_thread(), 42);
        })
        .join()
        .expect("the attached thread ends cleanly");
    }
}
