//! Switch latency: experiment start (payload already unpacked into a staging directory), stop
//! and promote, for payloads of 1 MB, 100 MB and 1 GB. A switch never copies, so the times
//! must not grow with the payload.
//!
//! Setup stays cheap: between iterations (untimed) a version directory is cycled back into a
//! staging directory by one rename, never rewritten; the payloads are written once.
//!
//! After criterion's per-benchmark reports, an interleaved pass runs every operation on every
//! size back to back, round after round, and prints the per-size medians and the
//! largest/smallest ratio: the machine's background load then falls on all sizes alike.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark program

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use outpost_repo::{PackageName, Repository, StagingDir, Version};

const SIZES: [(&str, u64); 3] = [("1MB", 1 << 20), ("100MB", 100 << 20), ("1GB", 1 << 30)];
/// Files per payload: the same for every size, so only the bytes differ.
const FILES: u64 = 8;

struct Fixture {
    _dir: tempfile::TempDir,
    repo: Repository,
    name: PackageName,
    a: Version,
    b: Version,
}

/// Writes `size` bytes of incompressible-looking data over [`FILES`] files, plus a small tree.
fn write_payload(dir: &Path, size: u64, seed: u8) {
    let chunk: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect();
    for f in 0..FILES {
        let sub = dir.join(format!("lib/part{}", f % 2));
        fs_err::create_dir_all(&sub).unwrap();
        let mut file = fs_err::File::create(sub.join(format!("blob{f}.bin"))).unwrap();
        let mut left = size / FILES;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
    }
    fs_err::write(dir.join("VERSION"), [seed]).unwrap();
}

/// Moves a version directory back into a fresh staging directory (one rename).
fn cycle(fx: &Fixture, version: &Version) -> StagingDir {
    let staged = fx.repo.staging("bench").unwrap();
    fs_err::remove_dir(staged.path()).unwrap();
    fs_err::rename(fx.repo.version_dir(&fx.name, version), staged.path()).unwrap();
    staged
}

/// A repository with stable `a` and experiment `b`, each a payload of `size` bytes.
fn fixture(size: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::open(dir.path().join("root")).unwrap();
    let name = PackageName::new("bench").unwrap();
    let a = Version::new("1.0.0").unwrap();
    let b = Version::new("2.0.0").unwrap();
    let staged = repo.staging("a").unwrap();
    write_payload(staged.path(), size, 1);
    repo.install(&name, &a, staged).unwrap();
    let staged = repo.staging("b").unwrap();
    write_payload(staged.path(), size, 2);
    repo.start_experiment(&name, &b, staged).unwrap();
    Fixture {
        _dir: dir,
        repo,
        name,
        a,
        b,
    }
}

/// The three operations under test. Each takes the state it needs from whatever state the
/// previous one left (untimed) and times only the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Start,
    Stop,
    Promote,
}

impl Op {
    const ALL: [Op; 3] = [Op::Start, Op::Stop, Op::Promote];

    fn name(self) -> &'static str {
        match self {
            Op::Start => "experiment_start",
            Op::Stop => "experiment_stop",
            Op::Promote => "experiment_promote",
        }
    }

    /// Untimed setup, then the timed operation.
    fn run_once(self, fx: &Fixture) -> Duration {
        let state = fx.repo.state(&fx.name).unwrap().unwrap();
        let start_other = |fx: &Fixture, version: &Version| {
            let staged = cycle(fx, version);
            fx.repo.start_experiment(&fx.name, version, staged).unwrap();
        };
        match self {
            Op::Start => {
                // state {x} (or {x, y}: stop first), the other version staged again.
                if state.experiment.is_some() {
                    fx.repo.stop_experiment(&fx.name).unwrap();
                }
                let other = if state.stable == fx.a { &fx.b } else { &fx.a };
                let staged = cycle(fx, other);
                let t = Instant::now();
                fx.repo.start_experiment(&fx.name, other, staged).unwrap();
                t.elapsed()
            }
            Op::Stop => {
                if state.experiment.is_none() {
                    let other = if state.stable == fx.a { &fx.b } else { &fx.a };
                    start_other(fx, other);
                }
                let t = Instant::now();
                fx.repo.stop_experiment(&fx.name).unwrap();
                t.elapsed()
            }
            Op::Promote => {
                if state.experiment.is_none() {
                    let other = if state.stable == fx.a { &fx.b } else { &fx.a };
                    start_other(fx, other);
                }
                let t = Instant::now();
                fx.repo.promote_experiment(&fx.name).unwrap();
                t.elapsed()
            }
        }
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Rounds of the interleaved pass that computes the ratios.
const ROUNDS: usize = 200;

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    // `cargo bench` passes `--bench`; without it (`cargo test --benches`) each benchmark runs
    // once as a smoke test, on the smallest payload only.
    let measuring = std::env::args().any(|a| a == "--bench");
    let sizes = if measuring { &SIZES[..] } else { &SIZES[..1] };
    let fixtures: Vec<(&str, Fixture)> = sizes
        .iter()
        .map(|(label, size)| (*label, fixture(*size)))
        .collect();

    // Criterion's own reports, one benchmark per operation and size.
    let mut group = criterion.benchmark_group("switch");
    for (label, fx) in &fixtures {
        for op in Op::ALL {
            group.bench_with_input(BenchmarkId::new(op.name(), label), fx, |bench, fx| {
                bench.iter_custom(|iters| (0..iters).map(|_| op.run_once(fx)).sum());
            });
        }
    }
    group.finish();
    criterion.final_summary();

    // The ratios, from one interleaved pass: every round runs each operation on each size
    // back to back, so load from the rest of the machine falls on all sizes alike.
    if !measuring {
        return;
    }
    let mut samples: BTreeMap<(Op, usize), Vec<Duration>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        for op in Op::ALL {
            for (i, (_, fx)) in fixtures.iter().enumerate() {
                samples.entry((op, i)).or_default().push(op.run_once(fx));
            }
        }
    }
    println!("\nper-operation medians over {ROUNDS} interleaved rounds:");
    println!(
        "| operation | {} | largest / smallest |",
        SIZES.map(|s| s.0).join(" | ")
    );
    println!("|---|{}---|", "---|".repeat(SIZES.len()));
    for op in Op::ALL {
        let medians: Vec<Duration> = (0..SIZES.len())
            .map(|i| median(samples.get_mut(&(op, i)).unwrap()))
            .collect();
        let cells: Vec<String> = medians
            .iter()
            .map(|d| format!("{:.3} ms", d.as_secs_f64() * 1e3))
            .collect();
        let ratio = medians[SIZES.len() - 1].as_secs_f64() / medians[0].as_secs_f64();
        println!("| {} | {} | {ratio:.2} |", op.name(), cells.join(" | "));
    }
}
