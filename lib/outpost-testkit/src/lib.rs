//! Test support for outpost's tests and benchmarks, never a dependency of outpost itself
//! (`publish = false`, used only as a dev-dependency):
//!
//! - [`Registry`]: Debian's `docker-registry` on `127.0.0.1`, on a free port, with its own
//!   configuration and storage in a temporary directory, optionally behind htpasswd (basic)
//!   or bearer-token authentication. It is stopped when dropped.
//! - [`TokenServer`]: the token endpoint of the bearer-token flow, signing JWTs with a key
//!   made by the `openssl` command.
//! - [`FaultProxy`]: an HTTP/1.1 proxy in front of any server that records every request
//!   (method, path, `Range`) and injects faults into chosen ones: an error status, a
//!   connection cut in the middle of a body, a corrupted byte.
//! - [`FileServer`]: serves the files of a directory, with range requests.
//! - [`client`]: the one test HTTP client (hyper, over a Unix socket or TCP; raw bytes for
//!   malformed HTTP).
//! - [`fixtures`]: tar archives (well-formed and hostile), compressed tarballs, trees on disk
//!   and their snapshots, a sandbox that shows whether anything was written outside it.
//! - [`noise`]: deterministic incompressible bytes for packages and archives.
//! - [`Prometheus`]: Debian's `prometheus` server on `127.0.0.1`, scraping targets found
//!   through file-based service discovery, with a client for its query API.
//! - [`loadgen`]: concurrent keep-alive HTTP/1.1 load over a Unix socket, for benchmarks.
//!
//! The servers are std threads and blocking sockets, independent of the caller's runtime.
//! Waits poll with a deadline; nothing sleeps a fixed time before using a server.
#![allow(clippy::print_stderr)]

pub mod bench;
pub mod client;
mod files;
pub mod fixtures;
pub mod loadgen;
pub mod prometheus;
mod proxy;
mod registry;
mod token;

#[allow(unused_imports)]
use {files::*, proxy::*, registry::*, token::*};

pub use files::FileServer;
pub use prometheus::{Prometheus, ScrapeTarget};
pub use proxy::{Fault, FaultProxy, Rule, SeenRequest};
pub use registry::{Registry, RegistryAccess};
pub use token::TokenServer;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// `len` deterministic bytes (xorshift64 from `seed`) that neither gzip nor zstd can
/// compress: package payloads whose size on the wire is their size on disk.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// How long a server may take to start.
pub(crate) const START_DEADLINE: Duration = Duration::from_secs(30);

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Polls `check` with a short backoff until it returns `Some` or `deadline` passes.
pub(crate) fn poll<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if started.elapsed() > deadline {
            return None;
        }
        // A poll interval while a process starts, not a wait for an event.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Sends `GET path` to `addr` with [`client`] and returns the status code and the body.
///
/// # Errors
/// Those of [`client::send_blocking`].
pub fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<(u16, Vec<u8>)> {
    let mut req = client::Req::new("GET", path).header("Host", &addr.to_string());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let r = client::send_blocking(addr, &req)?;
    Ok((r.status, r.body))
}

/// Standard base64 (with padding) or its URL-safe variant (without).
pub fn base64(data: &[u8], url_safe: bool) -> String {
    let table: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(table[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if !url_safe {
                out.push('=');
            }
        }
    }
    out
}
