//! The safe tar unpacker: every entry is validated, then written relative to directory file
//! descriptors, never through a path string.
//!
//! # How entries reach the disk
//! - The entry's path becomes a [`SafeRelPath`] or the unpack fails.
//! - Its parent is reached from the destination's descriptor one component at a time with
//!   `openat(O_DIRECTORY | O_NOFOLLOW)`, creating missing directories with `mkdirat`; a
//!   component that is a file or a symlink stops the walk (`ENOTDIR`/`ELOOP`), so no entry is
//!   ever written through a link.
//! - Files are created with `openat(O_CREAT | O_EXCL | O_NOFOLLOW)`: nothing existing is ever
//!   opened for writing, so a duplicate entry (in this archive or an earlier layer) fails.
//! - Modes are set with `fchmod` to 0755 when the archive gave any execute bit, else 0644;
//!   directories are 0755. Owners and times are not restored.
//!
//! Files are not fsynced here: the caller makes the tree durable before installing it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags};
use rustix::io::Errno;
use tar::EntryType;

use crate::control::{Cancel, Limits, UnpackStats};
use crate::error::{ArchiveError, LimitKind, UnsafeReason};
use crate::path::{SafeRelPath, symlink_target};

/// Buffer for copying file contents out of the archive.
const COPY_BUF: usize = 1 << 20;
/// Largest GNU long-name or long-link record accepted.
const MAX_NAME_RECORD: u64 = 64 << 10;
/// Largest PAX extended header accepted.
const MAX_PAX_RECORD: u64 = 1 << 20;

const FILE_MODE: u32 = 0o644;
const EXEC_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;

/// The mode a regular file gets: 0755 if the archive set any execute bit, else 0644.
pub fn normalized_mode(mode: u32) -> u32 {
    if mode & 0o111 != 0 {
        EXEC_MODE
    } else {
        FILE_MODE
    }
}

/// Extension headers seen before the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_link: Option<Vec<u8>>,
    pax_size: Option<u64>,
    pax_seen: bool,
    sparse: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.long_name.is_none() && self.long_link.is_none() && !self.pax_seen
    }

    fn name_hint(&self) -> Option<String> {
        self.pax_path
            .as_deref()
            .or(self.long_name.as_deref())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

fn corrupt(entry: Option<&str>, source: io::Error) -> ArchiveError {
    ArchiveError::CorruptArchive {
        entry: entry.map(str::to_owned),
        source,
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Bytes of a fixed-size, NUL-terminated header field up to its terminator; bytes other
/// than NUL after the terminator are refused (a name that other readers might see longer).
fn header_field(field: &[u8]) -> Result<&[u8], ()> {
    match field.iter().position(|b| *b == 0) {
        Some(end) if field[end..].iter().any(|b| *b != 0) => Err(()),
        Some(end) => Ok(&field[..end]),
        None => Ok(field),
    }
}

/// Writes tar archives into one destination directory, entry by entry, under [`Limits`].
///
/// Several archives (the layers of an image) may be written in turn into the same tree:
/// directories may repeat across them, any other path may not.
pub(crate) struct TreeWriter<'a> {
    root: OwnedFd,
    root_path: PathBuf,
    limits: Limits,
    cancel: &'a Cancel,
    stats: UnpackStats,
    /// Bytes of extension records (long names, PAX headers); they count against
    /// `max_total_bytes` with the files, so no archive decompresses without bound.
    record_bytes: u64,
    /// Directory entries of the archive being written, to refuse a repeated one.
    archive_dirs: HashSet<String>,
    /// The directory of the last entry, as (relative path, descriptor).
    parent: Option<(String, OwnedFd)>,
    buf: Vec<u8>,
}

impl<'a> TreeWriter<'a> {
    /// Opens `dest`, which must be an existing, empty directory.
    pub(crate) fn create(
        dest: &Path,
        limits: &Limits,
        cancel: &'a Cancel,
    ) -> Result<Self, ArchiveError> {
        let root = rustix::fs::openat(
            CWD,
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ArchiveError::Write {
            path: dest.to_owned(),
            source: e.into(),
        })?;
        if fs_err::read_dir(dest)?.next().is_some() {
            return Err(ArchiveError::DestinationNotEmpty {
                path: dest.to_owned(),
            });
        }
        Ok(Self {
            root,
            root_path: dest.to_owned(),
            limits: *limits,
            cancel,
            stats: UnpackStats::default(),
            record_bytes: 0,
            archive_dirs: HashSet::new(),
            parent: None,
            buf: Vec::new(),
        })
    }

    pub(crate) fn stats(&self) -> UnpackStats {
        self.stats
    }

    fn check_cancel(&self) -> Result<(), ArchiveError> {
        if self.cancel.is_cancelled() {
            Err(ArchiveError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Writes every entry of one tar stream, stopping at its end-of-archive marker (the
    /// caller reads whatever follows). On error the tree holds what was written so far and
    /// must be discarded.
    pub(crate) fn unpack_archive<R: Read>(&mut self, reader: R) -> Result<(), ArchiveError> {
        self.archive_dirs.clear();
        if self.buf.len() < COPY_BUF {
            self.buf.resize(COPY_BUF, 0);
        }
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| corrupt(None, e))?.raw(true);
        let mut pending = Pending::default();
        for entry in entries {
            self.check_cancel()?;
            let mut entry = entry.map_err(|e| corrupt(pending.name_hint().as_deref(), e))?;
            let kind = entry.header().entry_type();
            if is_record(kind) {
                self.count_record(entry.size(), &pending)?;
            }
            match kind {
                EntryType::GNULongName | EntryType::GNULongLink => {
                    let data = read_record(&mut entry, MAX_NAME_RECORD)
                        .map_err(|e| corrupt(pending.name_hint().as_deref(), e))?;
                    let data = trim_nuls(data);
                    let slot = if kind == EntryType::GNULongName {
                        &mut pending.long_name
                    } else {
                        &mut pending.long_link
                    };
                    if slot.replace(data).is_some() {
                        return Err(corrupt(
                            pending.name_hint().as_deref(),
                            invalid("two GNU long-name records for one entry"),
                        ));
                    }
                }
                EntryType::XHeader => {
                    if pending.pax_seen {
                        return Err(corrupt(
                            pending.name_hint().as_deref(),
                            invalid("two PAX headers for one entry"),
                        ));
                    }
                    let data = read_record(&mut entry, MAX_PAX_RECORD)
                        .map_err(|e| corrupt(pending.name_hint().as_deref(), e))?;
                    parse_pax(&data, &mut pending).map_err(|e| corrupt(None, e))?;
                }
                EntryType::XGlobalHeader => {
                    // Archive-wide metadata (`git archive` writes a commit id there); nothing
                    // of it is written, but it counts as an entry.
                    if !pending.is_empty() {
                        return Err(corrupt(
                            pending.name_hint().as_deref(),
                            invalid("extension headers before a PAX global header"),
                        ));
                    }
                    self.count_entry("<pax global header>")?;
                }
                _ => {
                    let p = std::mem::take(&mut pending);
                    self.entry(&mut entry, kind, p)?;
                }
            }
        }
        if !pending.is_empty() {
            return Err(corrupt(
                pending.name_hint().as_deref(),
                invalid("extension headers at the end of the archive describe no entry"),
            ));
        }
        Ok(())
    }

    fn count_record(&mut self, size: u64, pending: &Pending) -> Result<(), ArchiveError> {
        if size > MAX_PAX_RECORD {
            return Err(corrupt(
                pending.name_hint().as_deref(),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("extension header of {size} bytes (at most {MAX_PAX_RECORD} accepted)"),
                ),
            ));
        }
        self.record_bytes += size;
        if self.stats.bytes.saturating_add(self.record_bytes) > self.limits.max_total_bytes {
            return Err(ArchiveError::LimitExceeded {
                entry: pending
                    .name_hint()
                    .unwrap_or_else(|| "<extension header>".to_owned()),
                limit: LimitKind::TotalBytes,
                max: self.limits.max_total_bytes,
            });
        }
        Ok(())
    }

    fn count_entry(&mut self, display: &str) -> Result<(), ArchiveError> {
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(ArchiveError::LimitExceeded {
                entry: display.to_owned(),
                limit: LimitKind::Entries,
                max: self.limits.max_entries,
            });
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        p: Pending,
    ) -> Result<(), ArchiveError> {
        let header = entry.header();
        let header_path = || -> Result<Cow<'_, [u8]>, ()> {
            header_field(&header.as_old().name)?;
            if let Some(ustar) = header.as_ustar() {
                header_field(&ustar.prefix)?;
            }
            Ok(header.path_bytes())
        };
        let raw_path: Vec<u8> = match (p.pax_path, p.long_name) {
            (Some(path), _) | (None, Some(path)) => path,
            (None, None) => match header_path() {
                Ok(path) => path.into_owned(),
                Err(()) => {
                    let shown = header.path_bytes();
                    return Err(ArchiveError::UnsafeEntry {
                        entry: String::from_utf8_lossy(&shown).into_owned(),
                        reason: UnsafeReason::NulInHeaderField,
                    });
                }
            },
        };
        let display = String::from_utf8_lossy(&raw_path).into_owned();
        let unsafe_entry = |reason| ArchiveError::UnsafeEntry {
            entry: display.clone(),
            reason,
        };
        self.count_entry(&display)?;
        if p.sparse {
            return Err(unsafe_entry(UnsafeReason::UnsupportedType {
                kind: "GNU sparse file".into(),
            }));
        }
        let path = SafeRelPath::from_archive(&raw_path).map_err(unsafe_entry)?;
        let size = entry.size();
        if p.pax_size.is_some_and(|s| s != size) {
            return Err(unsafe_entry(UnsafeReason::PaxSizeMismatch));
        }
        if size > 0 && matches!(kind, EntryType::Directory | EntryType::Symlink) {
            return Err(corrupt(
                Some(&display),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a directory or symlink entry carrying {size} bytes of data"),
                ),
            ));
        }
        let unsupported = |kind: &str| {
            unsafe_entry(UnsafeReason::UnsupportedType {
                kind: kind.to_owned(),
            })
        };
        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let mode = header.mode().map_err(|e| corrupt(Some(&display), e))?;
                if path.is_root() {
                    return Err(unsafe_entry(UnsafeReason::EmptyPath));
                }
                self.file(entry, &path, &display, size, mode)
            }
            EntryType::Directory => self.dir(&path, &display),
            EntryType::Symlink => {
                let target = match (p.pax_link, p.long_link) {
                    (Some(t), _) | (None, Some(t)) => t,
                    (None, None) => header_field(&header.as_old().linkname)
                        .map_err(|()| unsafe_entry(UnsafeReason::NulInHeaderField))?
                        .to_vec(),
                };
                if path.is_root() {
                    return Err(unsafe_entry(UnsafeReason::EmptyPath));
                }
                let target = symlink_target(&path, &target).map_err(unsafe_entry)?;
                self.symlink(&path, &display, &target)
            }
            EntryType::Link => {
                let target = p
                    .pax_link
                    .or(p.long_link)
                    .or_else(|| header.link_name_bytes().map(Cow::into_owned))
                    .unwrap_or_default();
                Err(unsafe_entry(UnsafeReason::HardLink {
                    target: String::from_utf8_lossy(&target).into_owned(),
                }))
            }
            EntryType::Char => Err(unsupported("character device")),
            EntryType::Block => Err(unsupported("block device")),
            EntryType::Fifo => Err(unsupported("fifo")),
            EntryType::GNUSparse => Err(unsupported("GNU sparse file")),
            other => Err(unsupported(&format!(
                "type {:?}",
                char::from(other.as_byte())
            ))),
        }
    }

    fn write_err(&self, path: &str, e: impl Into<io::Error>) -> ArchiveError {
        ArchiveError::Write {
            path: self.root_path.join(path),
            source: e.into(),
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &SafeRelPath,
        display: &str,
        size: u64,
        mode: u32,
    ) -> Result<(), ArchiveError> {
        let limits = self.limits;
        let over = |limit, max| ArchiveError::LimitExceeded {
            entry: display.to_owned(),
            limit,
            max,
        };
        if size > limits.max_file_bytes {
            return Err(over(LimitKind::FileBytes, limits.max_file_bytes));
        }
        let used = self.stats.bytes.saturating_add(self.record_bytes);
        if used.saturating_add(size) > limits.max_total_bytes {
            return Err(over(LimitKind::TotalBytes, limits.max_total_bytes));
        }
        let (key, dir) = self.take_parent(path, display)?;
        let name = path.split_last().map_or("", |(_, n)| n);
        let fd = rustix::fs::openat(
            &dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        );
        self.parent = Some((key, dir));
        let fd = match fd {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                return Err(ArchiveError::UnsafeEntry {
                    entry: display.to_owned(),
                    reason: UnsafeReason::Duplicate,
                });
            }
            Err(e) => return Err(self.write_err(path.as_str(), e)),
        };
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(normalized_mode(mode)))
            .map_err(|e| self.write_err(path.as_str(), e))?;
        let mut file = std::fs::File::from(fd);
        let mut written: u64 = 0;
        loop {
            self.check_cancel()?;
            let n = match entry.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(corrupt(Some(display), e)),
            };
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > limits.max_file_bytes {
                return Err(over(LimitKind::FileBytes, limits.max_file_bytes));
            }
            if used.saturating_add(written) > limits.max_total_bytes {
                return Err(over(LimitKind::TotalBytes, limits.max_total_bytes));
            }
            if let Err(e) = file.write_all(&self.buf[..n]) {
                return Err(self.write_err(path.as_str(), e));
            }
        }
        if written != size {
            return Err(corrupt(
                Some(display),
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the archive ends after {written} of the entry's {size} bytes"),
                ),
            ));
        }
        self.stats.bytes += written;
        self.stats.files += 1;
        Ok(())
    }

    fn dir(&mut self, path: &SafeRelPath, display: &str) -> Result<(), ArchiveError> {
        let Some((_, name)) = path.split_last() else {
            // `./`: the destination itself, which exists.
            return Ok(());
        };
        if !self.archive_dirs.insert(path.as_str().to_owned()) {
            return Err(ArchiveError::UnsafeEntry {
                entry: display.to_owned(),
                reason: UnsafeReason::Duplicate,
            });
        }
        let (_, parent) = self.take_parent(path, display)?;
        let (fd, created) = open_or_create_dir(parent.as_fd(), name).map_err(|e| match e {
            DirError::NotADir => ArchiveError::UnsafeEntry {
                entry: display.to_owned(),
                reason: UnsafeReason::Duplicate,
            },
            DirError::Io(e) => self.write_err(path.as_str(), e),
        })?;
        self.stats.directories += u64::from(created);
        // The next entries are most likely inside this directory.
        self.parent = Some((path.as_str().to_owned(), fd));
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &SafeRelPath,
        display: &str,
        target: &str,
    ) -> Result<(), ArchiveError> {
        let (key, dir) = self.take_parent(path, display)?;
        let name = path.split_last().map_or("", |(_, n)| n);
        let made = rustix::fs::symlinkat(target, &dir, name);
        self.parent = Some((key, dir));
        match made {
            Ok(()) => {
                self.stats.symlinks += 1;
                Ok(())
            }
            Err(Errno::EXIST) => Err(ArchiveError::UnsafeEntry {
                entry: display.to_owned(),
                reason: UnsafeReason::Duplicate,
            }),
            Err(e) => Err(self.write_err(path.as_str(), e)),
        }
    }

    /// The descriptor of `path`'s parent directory, creating missing directories on the way.
    /// The caller puts it back into `self.parent` when done.
    fn take_parent(
        &mut self,
        path: &SafeRelPath,
        display: &str,
    ) -> Result<(String, OwnedFd), ArchiveError> {
        let parent = path.split_last().map_or("", |(p, _)| p);
        if let Some((key, fd)) = self.parent.take()
            && key == parent
        {
            return Ok((key, fd));
        }
        let mut cur: Option<OwnedFd> = None;
        let mut walked = 0;
        for comp in parent.split('/').filter(|c| !c.is_empty()) {
            walked += comp.len() + usize::from(walked > 0);
            let sofar = &parent[..walked];
            let base = match &cur {
                Some(fd) => fd.as_fd(),
                None => self.root.as_fd(),
            };
            let (next, created) = open_or_create_dir(base, comp).map_err(|e| match e {
                DirError::NotADir => ArchiveError::UnsafeEntry {
                    entry: display.to_owned(),
                    reason: UnsafeReason::BelowNonDirectory {
                        parent: sofar.to_owned(),
                    },
                },
                DirError::Io(e) => self.write_err(sofar, e),
            })?;
            self.stats.directories += u64::from(created);
            cur = Some(next);
        }
        let fd = match cur {
            Some(fd) => fd,
            None => {
                rustix::io::fcntl_dupfd_cloexec(&self.root, 0).map_err(|e| self.write_err("", e))?
            }
        };
        Ok((parent.to_owned(), fd))
    }
}

impl std::fmt::Debug for TreeWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeWriter")
            .field("root", &self.root_path)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

enum DirError {
    NotADir,
    Io(io::Error),
}

/// Opens the directory `name` under `base` without following a link, creating it (0755)
/// when missing; says whether it was created.
fn open_or_create_dir(base: BorrowedFd<'_>, name: &str) -> Result<(OwnedFd, bool), DirError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(base, name, flags, Mode::empty()) {
        Ok(fd) => return Ok((fd, false)),
        Err(Errno::NOENT) => {}
        Err(Errno::NOTDIR | Errno::LOOP) => return Err(DirError::NotADir),
        Err(e) => return Err(DirError::Io(e.into())),
    }
    let created = match rustix::fs::mkdirat(base, name, Mode::from_raw_mode(DIR_MODE)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(DirError::Io(e.into())),
    };
    let fd = match rustix::fs::openat(base, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOTDIR | Errno::LOOP) => return Err(DirError::NotADir),
        Err(e) => return Err(DirError::Io(e.into())),
    };
    if created {
        // mkdirat's mode went through the umask; make it exact.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(DIR_MODE))
            .map_err(|e| DirError::Io(e.into()))?;
    }
    Ok((fd, created))
}

/// Extension records: metadata for the next entry, or for the whole archive.
fn is_record(kind: EntryType) -> bool {
    matches!(
        kind,
        EntryType::GNULongName
            | EntryType::GNULongLink
            | EntryType::XHeader
            | EntryType::XGlobalHeader
    )
}

/// Reads a whole extension record, refusing one over `max` bytes before reading it.
fn read_record<R: Read>(entry: &mut tar::Entry<'_, R>, max: u64) -> io::Result<Vec<u8>> {
    let size = entry.size();
    if size > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("extension header of {size} bytes (at most {max} accepted)"),
        ));
    }
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    entry.read_to_end(&mut data)?;
    if data.len() as u64 != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the archive ends inside an extension header",
        ));
    }
    Ok(data)
}

fn trim_nuls(mut data: Vec<u8>) -> Vec<u8> {
    while data.last() == Some(&0) {
        data.pop();
    }
    data
}

fn parse_pax(data: &[u8], p: &mut Pending) -> io::Result<()> {
    p.pax_seen = true;
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext?;
        let key = ext.key().map_err(|_| invalid("PAX key is not UTF-8"))?;
        match key {
            "path" => p.pax_path = Some(ext.value_bytes().to_vec()),
            "linkpath" => p.pax_link = Some(ext.value_bytes().to_vec()),
            "size" => {
                let size = ext
                    .value()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| invalid("PAX size record is not a number"))?;
                p.pax_size = Some(size);
            }
            k if k.starts_with("GNU.sparse.") => p.sparse = true,
            _ => {}
        }
    }
    Ok(())
}
