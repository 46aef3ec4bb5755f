//! Starting a health command cheaply. The standard library starts a process with glibc's
//! `posix_spawn`, which maps a fresh stack for the short-lived child that shares the daemon's
//! memory (a `CLONE_VM | CLONE_VFORK` clone) and unmaps it afterwards: the unmap flushes the
//! TLBs of every CPU running one of the daemon's threads, on every run. Here the same kind of
//! child runs on one stack kept for the life of the daemon (spawns take turns on it), so a
//! start is the clone and the `execve`, nothing more.
//!
//! The clone also returns the child's pidfd (`CLONE_PIDFD`: no `pidfd_open` afterwards) and
//! asks for no exit signal: the daemon learns of the exit through the pidfd, so no `SIGCHLD`
//! wakes the runtime's signal handling (installed once a lifecycle hook ran) for each run. A
//! child without an exit signal is a "clone" child to the kernel: it is reaped with `__WALL`
//! ([`WALL`]), and a `waitpid` of any child elsewhere in the daemon never takes it.
//!
//! The child does what `posix_spawn` with the standard library's attributes does: it resets
//! the signal handlers the daemon installed (they must not run on the daemon's memory) and
//! `SIGPIPE` (which the Rust runtime ignores) to their defaults, starts its own process group,
//! changes to the working directory, connects stdin to `/dev/null` and stdout and stderr to
//! the output file, unblocks every signal and executes the program. Every file descriptor of
//! the daemon is close-on-exec, so nothing else leaks into the command.

use std::ffi::{CString, c_int, c_void};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::sync::{Mutex, OnceLock};

/// `__WALL`: what a wait for a child started here needs (it has no exit signal).
pub(crate) const WALL: u32 = libc::__WALL as u32;

/// The child's stack: it runs a few system calls before `execve`.
const STACK_SIZE: usize = 64 * 1024;

/// The stack every spawn uses in turn, 16-byte aligned.
static STACK: Mutex<Option<Box<[u128]>>> = Mutex::new(None);

/// `/dev/null`, opened once (close-on-exec).
static DEV_NULL: OnceLock<std::io::Result<OwnedFd>> = OnceLock::new();

/// A program to start: everything the child needs, prepared by the parent (the child must
/// not allocate).
#[derive(Debug)]
pub(crate) struct Spawn {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
}

impl Spawn {
    /// `program` (a path) with `args` (`argv[0]` is the program as given), the environment
    /// `env` and the working directory `cwd`.
    pub(crate) fn new(
        program: &std::path::Path,
        argv0: &str,
        args: &[String],
        env: &[(&str, &std::ffi::OsStr)],
        cwd: &std::path::Path,
    ) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt as _;
        let c = |bytes: &[u8]| {
            CString::new(bytes).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "a NUL byte in the command, its environment or its directory",
                )
            })
        };
        let mut argv = vec![c(argv0.as_bytes())?];
        for a in args {
            argv.push(c(a.as_bytes())?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in env {
            let mut kv = Vec::with_capacity(k.len() + 1 + v.len());
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(c(&kv)?);
        }
        Ok(Self {
            program: c(program.as_os_str().as_bytes())?,
            argv,
            envp,
            cwd: c(cwd.as_os_str().as_bytes())?,
        })
    }

    /// Starts the program in a new process group whose id is its pid, with stdout and stderr
    /// on `output`; returns the pid and a pidfd of the child. The error is the child's when
    /// it could not execute the program (the failed child is reaped here).
    pub(crate) fn start(
        &self,
        output: BorrowedFd<'_>,
    ) -> std::io::Result<(rustix::process::Pid, OwnedFd)> {
        let null = match DEV_NULL.get_or_init(|| {
            rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(std::io::Error::from)
        }) {
            Ok(fd) => fd.as_raw_fd(),
            Err(e) => return Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        let argv: Vec<*const libc::c_char> = self
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let envp: Vec<*const libc::c_char> = self
            .envp
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let mut args = ChildArgs {
            program: self.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_ptr(),
            cwd: self.cwd.as_ptr(),
            null,
            output: output.as_raw_fd(),
            errno: 0,
        };
        let mut stack = STACK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stack = stack.get_or_insert_with(|| vec![0u128; STACK_SIZE / 16].into_boxed_slice());
        // The stack grows down from its end (16-byte aligned: the slice is of u128).
        let top = stack.as_mut_ptr_range().end.cast::<c_void>();
        // SAFETY: every signal is blocked around the clone, so no handler of the daemon runs on
        // the child (which shares the daemon's memory) before it reset them; the child only
        // reads `args` and the strings it points to, all alive until the clone returns
        // (CLONE_VFORK suspends this thread until the child executed the program or exited),
        // writes `args.errno`, and runs on `stack`, held locked for that time.
        let mut pidfd: c_int = -1;
        let pid = unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            // Exit signal 0 (the low byte of the flags): no SIGCHLD. With CLONE_PIDFD the
            // kernel stores the child's pidfd (close-on-exec) at the parent-tid pointer.
            let pid = libc::clone(
                child,
                top,
                libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD,
                std::ptr::from_mut(&mut args).cast::<c_void>(),
                std::ptr::from_mut(&mut pidfd),
            );
            let clone_error = std::io::Error::last_os_error();
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            if pid < 0 {
                return Err(clone_error);
            }
            pid
        };
        if pidfd < 0 {
            // Not expected once the clone succeeded with CLONE_PIDFD; without a handle on
            // it, the child is not left running unwatched.
            // SAFETY: plain system calls on the child just started (a clone child: __WALL).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL);
            }
            return Err(std::io::Error::other("clone returned no pidfd"));
        }
        // SAFETY: a descriptor the kernel just opened for us, owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let pid = rustix::process::Pid::from_raw(pid)
            .ok_or_else(|| std::io::Error::other("clone returned pid 0"))?;
        if args.errno != 0 {
            // The child exited at once; reap it.
            let _ = wait_exit(pidfd.as_fd(), false);
            return Err(std::io::Error::from_raw_os_error(args.errno));
        }
        Ok((pid, pidfd))
    }
}

/// Reaps the child behind `pidfd` once it exited (with `nohang`: only if it already did).
///
/// # Errors
/// `waitid` failed.
pub(crate) fn wait_exit(
    pidfd: BorrowedFd<'_>,
    nohang: bool,
) -> std::io::Result<Option<rustix::process::WaitIdStatus>> {
    use rustix::process::{WaitId, WaitIdOptions};
    let mut options = WaitIdOptions::EXITED | WaitIdOptions::from_bits_retain(WALL);
    if nohang {
        options |= WaitIdOptions::NOHANG;
    }
    Ok(rustix::process::waitid(WaitId::PidFd(pidfd), options)?
        .filter(|s| s.exited() || s.killed() || s.dumped()))
}

#[repr(C)]
struct ChildArgs {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    null: c_int,
    output: c_int,
    /// Set by the child when a step failed.
    errno: c_int,
}

/// The child, on the shared stack: async-signal-safe calls only, then `execve`.
extern "C" fn child(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the parent's `ChildArgs`, alive and not touched by the suspended parent
    // until this child executed the program or exited.
    unsafe {
        let args = &mut *arg.cast::<ChildArgs>();
        let fail = |args: &mut ChildArgs| -> c_int {
            args.errno = *libc::__errno_location();
            if args.errno == 0 {
                args.errno = libc::EINVAL;
            }
            libc::_exit(127)
        };
        // Handlers installed by the daemon go back to the default; so does SIGPIPE.
        for sig in 1..=libc::SIGRTMAX() {
            let mut act: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut act) != 0 {
                continue;
            }
            if sig == libc::SIGPIPE
                || act.sa_sigaction != libc::SIG_IGN && act.sa_sigaction != libc::SIG_DFL
            {
                act.sa_sigaction = libc::SIG_DFL;
                act.sa_flags = 0;
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, std::ptr::null_mut());
            }
        }
        if libc::setpgid(0, 0) != 0
            || libc::chdir(args.cwd) != 0
            || libc::dup2(args.null, 0) < 0
            || libc::dup2(args.output, 1) < 0
            || libc::dup2(args.output, 2) < 0
        {
            return fail(args);
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        libc::execve(args.program, args.argv, args.envp);
        fail(args)
    }
}
