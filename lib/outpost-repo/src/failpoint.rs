//! Named failure points: where a test can crash the process or make a step fail.
//!
//! Every filesystem step of every repository operation calls [`hit`] with a static name just
//! before the step, and again with the name plus `.done` just after it succeeds. In production
//! [`hit`] costs a thread-local check and an atomic load, and does nothing.
//!
//! Two ways to make a point fire:
//!
//! - **Crash** (another process; only with the `failpoints` cargo feature): set the environment
//!   variable [`ENV`] (`OUTPOST_FAILPOINT`) to a name, or `name#N` for its N-th hit (1-based;
//!   plain `name` is its first hit). When the process reaches that hit it writes one line to
//!   stderr and calls [`std::process::abort`], which is as close to a power cut as a process can
//!   get: no destructor, no rollback, no flush. The variable is read once, at the first hit.
//!   Without the feature (every release build: the daemon runs as root, and an environment
//!   variable must not be able to abort it) the variable is never read.
//! - **Error** (this thread): [`inject`] arms a point for the current thread; that hit returns an
//!   [`Injected`] I/O error, so the operation fails at exactly that step and must roll back.
//!
//! [`record`] collects the names hit on the current thread, so a test can run an operation once,
//! learn every point it passes, then crash or fail it at each one in turn: new steps are covered
//! without editing the test. [`ALL`] lists every name this crate uses; the crate's tests fail if
//! an operation hits a name missing from it, and if a listed name is never hit.
//!
//! Other crates (the unpacker) call [`hit`] with their own names; they keep their own list.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::rc::Rc;
#[cfg(feature = "failpoints")]
use std::sync::OnceLock;
#[cfg(feature = "failpoints")]
use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable naming the point at which the process aborts: `name` or `name#N`.
pub const ENV: &str = "OUTPOST_FAILPOINT";

/// A filesystem step: the name hit before it, and the name hit after it succeeded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub(crate) before: &'static str,
    pub(crate) after: &'static str,
}

macro_rules! steps {
    ($($(#[$doc:meta])* $id:ident = $name:literal;)*) => {
        $(
            $(#[$doc])*
            pub(crate) const $id: Step = Step { before: $name, after: concat!($name, ".done") };
        )*
        /// Every failure point this crate hits: each step's name and the name plus `.done`.
        pub const ALL: &[&str] = &[$($name, concat!($name, ".done"),)*];
    };
}

steps! {
    /// `mkdir` of a staging directory under `tmp/`.
    STAGING_MKDIR = "repo.staging.mkdir";
    /// `mkdir` of `packages/<pkg>` on a first install.
    PACKAGE_MKDIR = "repo.package.mkdir";
    /// fsync of `packages/` after creating a package directory.
    PACKAGE_FSYNC = "repo.package.fsync";
    /// Sync of the staged tree (syncfs) before it is renamed into place.
    VERSION_SYNC = "repo.version.sync";
    /// Rename of an unlocked leftover version directory into `tmp/`.
    VERSION_ASIDE = "repo.version.aside";
    /// Rename of the staged tree to `packages/<pkg>/<version>`.
    VERSION_RENAME = "repo.version.rename";
    /// fsync of the package directory after the version directory arrived.
    VERSION_FSYNC = "repo.version.fsync";
    /// Creation of the temporary symlink beside a link.
    LINK_SYMLINK = "repo.link.symlink";
    /// Rename of the temporary symlink over the link.
    LINK_RENAME = "repo.link.rename";
    /// Unlink of the `experiment` link.
    LINK_UNLINK = "repo.link.unlink";
    /// fsync of the package directory after a link changed.
    LINK_FSYNC = "repo.link.fsync";
    /// Unlink of a stray temporary link or a broken `experiment` link at the start of an operation.
    REPAIR_UNLINK = "repo.repair.unlink";
    /// fsync of the package directory after a repair.
    REPAIR_FSYNC = "repo.repair.fsync";
    /// Deletion of a package's lock files named by dead processes, before it is removed.
    REMOVE_DEAD_LOCKS = "repo.remove.dead_locks";
    /// Rename of `packages/<pkg>` into `tmp/`.
    REMOVE_RENAME = "repo.remove.rename";
    /// fsync of `packages/` after a package left it.
    REMOVE_FSYNC = "repo.remove.fsync";
    /// Unlink of a broken link, stray temporary link or stray file named like a version.
    GC_UNLINK = "repo.gc.unlink";
    /// fsync of the package directory after GC repaired its links.
    GC_LINK_FSYNC = "repo.gc.link_fsync";
    /// Rename of an unreferenced, unlocked version directory into `tmp/`.
    GC_ASIDE = "repo.gc.aside";
    /// fsync of the package directory after versions left it.
    GC_FSYNC = "repo.gc.fsync";
    /// Deletion, inside `tmp/`, of a version directory GC moved there.
    GC_DELETE = "repo.gc.delete";
    /// rmdir of an empty package directory that has no links.
    GC_RMDIR_PACKAGE = "repo.gc.rmdir_package";
    /// Deletion of a lock file named by a dead process or an invalid pid.
    GC_DELETE_LOCK = "repo.gc.delete_lock";
    /// Deletion of the lock directory of a version (or package) that no longer exists.
    GC_DELETE_LOCK_DIR = "repo.gc.delete_lock_dir";
    /// Deletion of a leftover under `tmp/`.
    GC_DELETE_TMP = "repo.gc.delete_tmp";
}

/// The error an injected failure point returns (inside an [`io::Error`] of kind `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    /// The failure point that fired.
    pub name: &'static str,
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "injected failure at {}", self.name)
    }
}

impl std::error::Error for Injected {}

/// Marks a failure point. Returns an [`Injected`] error if [`inject`] armed this hit on the
/// current thread; with the `failpoints` feature, aborts the process if [`ENV`] names this hit;
/// otherwise returns `Ok(())`.
pub fn hit(name: &'static str) -> io::Result<()> {
    RECORDING.with_borrow(|rec| {
        if let Some(rec) = rec {
            rec.borrow_mut().push(name);
        }
    });
    let injected = ARMED.with_borrow(|armed| {
        let Some(armed) = armed else { return false };
        if armed.name != name || armed.fired.get() {
            return false;
        }
        let seen = armed.seen.get() + 1;
        armed.seen.set(seen);
        if seen == armed.nth {
            armed.fired.set(true);
            true
        } else {
            false
        }
    });
    if injected {
        return Err(io::Error::other(Injected { name }));
    }
    #[cfg(feature = "failpoints")]
    crash_if_targeted(name);
    Ok(())
}

/// Aborts the process if [`ENV`] names this hit of `name`.
#[cfg(feature = "failpoints")]
fn crash_if_targeted(name: &'static str) {
    use std::io::Write as _;
    if let Some(target) = env_target()
        && target.name == name
    {
        let seen = TARGET_SEEN.fetch_add(1, Ordering::SeqCst) + 1;
        if seen == target.nth {
            // Nothing useful can be done if stderr is closed: the abort below is the point.
            let _ = writeln!(
                io::stderr(),
                "outpost: failure point {name} (hit {seen}) reached: aborting"
            );
            std::process::abort();
        }
    }
}

/// Arms the `nth` hit (1-based; 0 counts as 1) of `name` on the current thread to fail with an
/// [`Injected`] error. Later hits pass. Disarmed when the guard drops; the previous arming (if
/// any) is restored then. The guard is tied to the thread that created it.
pub fn inject(name: &'static str, nth: u32) -> Injection {
    let armed = Rc::new(Armed {
        name,
        nth: nth.max(1),
        seen: Cell::new(0),
        fired: Cell::new(false),
    });
    let previous = ARMED.with_borrow_mut(|slot| slot.replace(Rc::clone(&armed)));
    Injection { armed, previous }
}

/// An armed failure point; see [`inject`].
#[derive(Debug)]
pub struct Injection {
    armed: Rc<Armed>,
    previous: Option<Rc<Armed>>,
}

impl Injection {
    /// Whether the armed hit was reached (and so returned an error).
    pub fn fired(&self) -> bool {
        self.armed.fired.get()
    }
}

impl Drop for Injection {
    fn drop(&mut self) {
        let previous = self.previous.take();
        ARMED.with_borrow_mut(|slot| *slot = previous);
    }
}

/// Starts recording, on the current thread, every failure point hit, in order. Stops when the
/// guard drops (a recording started before is resumed then).
pub fn record() -> Recording {
    let hits = Rc::new(RefCell::new(Vec::new()));
    let previous = RECORDING.with_borrow_mut(|slot| slot.replace(Rc::clone(&hits)));
    Recording { hits, previous }
}

/// A recording of failure points; see [`record`].
#[derive(Debug)]
pub struct Recording {
    hits: Rc<RefCell<Vec<&'static str>>>,
    previous: Option<Rc<RefCell<Vec<&'static str>>>>,
}

impl Recording {
    /// The names hit so far, in order, repeats included.
    pub fn hits(&self) -> Vec<&'static str> {
        self.hits.borrow().clone()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let previous = self.previous.take();
        RECORDING.with_borrow_mut(|slot| *slot = previous);
    }
}

/// The failure point named by an [`Injected`] error anywhere in `err`'s source chain (including
/// inside an [`io::Error`]), if any.
pub fn injected_name(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(injected) = e.downcast_ref::<Injected>() {
            return Some(injected.name);
        }
        // `io::Error::source` skips the payload of a custom error, so look at it directly.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(io::Error::get_ref)
            && let Some(injected) = inner.downcast_ref::<Injected>()
        {
            return Some(injected.name);
        }
        current = e.source();
    }
    None
}

#[derive(Debug)]
struct Armed {
    name: &'static str,
    nth: u32,
    seen: Cell<u32>,
    fired: Cell<bool>,
}

thread_local! {
    static ARMED: RefCell<Option<Rc<Armed>>> = const { RefCell::new(None) };
    static RECORDING: RefCell<Option<Rc<RefCell<Vec<&'static str>>>>> = const { RefCell::new(None) };
}

#[cfg(any(test, feature = "failpoints"))]
#[derive(Debug)]
struct Target {
    name: String,
    nth: u32,
}

#[cfg(feature = "failpoints")]
static TARGET: OnceLock<Option<Target>> = OnceLock::new();
#[cfg(feature = "failpoints")]
static TARGET_SEEN: AtomicU32 = AtomicU32::new(0);

#[cfg(feature = "failpoints")]
fn env_target() -> Option<&'static Target> {
    TARGET
        .get_or_init(|| std::env::var(ENV).ok().and_then(|v| parse_target(&v)))
        .as_ref()
}

#[cfg(any(test, feature = "failpoints"))]
fn parse_target(value: &str) -> Option<Target> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Some((name, nth)) = value.rsplit_once('#')
        && let Ok(nth) = nth.parse::<u32>()
    {
        return Some(Target {
            name: name.to_owned(),
            nth: nth.max(1),
        });
    }
    Some(Target {
        name: value.to_owned(),
        nth: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_paired() {
        let mut seen = std::collections::BTreeSet::new();
        for name in ALL {
            assert!(seen.insert(*name), "duplicate failure point {name}");
            assert!(name.starts_with("repo."), "{name} lacks the crate prefix");
        }
        for pair in ALL.chunks(2) {
            assert_eq!(format!("{}.done", pair[0]), pair[1]);
        }
    }

    #[test]
    fn injection_fires_on_the_nth_hit_only() {
        let injection = inject("repo.link.rename", 2);
        assert!(hit("repo.link.rename").is_ok());
        assert!(hit("repo.link.fsync").is_ok());
        let err = hit("repo.link.rename").unwrap_err();
        assert_eq!(injected_name(&err), Some("repo.link.rename"));
        assert!(injection.fired());
        assert!(hit("repo.link.rename").is_ok(), "only one hit fails");
        drop(injection);
        assert!(hit("repo.link.rename").is_ok());
    }

    #[test]
    fn injection_is_per_thread() {
        let _injection = inject("repo.gc.delete", 1);
        std::thread::spawn(|| assert!(hit("repo.gc.delete").is_ok()))
            .join()
            .unwrap();
        assert!(hit("repo.gc.delete").is_err());
    }

    #[test]
    fn recording_collects_in_order_and_nests() {
        let outer = record();
        hit("a.one").unwrap();
        {
            let inner = record();
            hit("a.two").unwrap();
            assert_eq!(inner.hits(), ["a.two"]);
        }
        hit("a.three").unwrap();
        assert_eq!(outer.hits(), ["a.one", "a.three"]);
    }

    #[test]
    fn injected_name_walks_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] io::Error);
        let _injection = inject("repo.version.sync", 1);
        let err = Wrapper(hit("repo.version.sync").unwrap_err());
        assert_eq!(injected_name(&err), Some("repo.version.sync"));
        let plain = Wrapper(io::Error::other("disk on fire"));
        assert_eq!(injected_name(&plain), None);
    }

    #[test]
    fn env_values_parse() {
        let t = parse_target("repo.link.rename#3").unwrap();
        assert_eq!((t.name.as_str(), t.nth), ("repo.link.rename", 3));
        let t = parse_target("repo.link.rename").unwrap();
        assert_eq!((t.name.as_str(), t.nth), ("repo.link.rename", 1));
        let t = parse_target("odd#name").unwrap();
        assert_eq!((t.name.as_str(), t.nth), ("odd#name", 1));
        assert!(parse_target("  ").is_none());
    }
}
