//! Switch latency: experiment start (payload already unpacked into a staging directory), stop
//! and promote, for payloads of 1 MB, 100 MB and 1 GB. A switch never copies, so the times
//! must not grow with the payload.
//!
//! Setup stays cheap: between iterations (untimed) a version directory is cycled back into a
//! staging directory by one rename, never rewritten. Each routine's individual durations are
//! also recorded, and at the end the per-size medians and the largest/smallest ratio are
//! printed, all from this one run.

#![allow(clippy::unwrap_used, clippy::print_stdout)] // a benchmark program

use std::cell::RefCell;
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

type Samples = RefCell<BTreeMap<(&'static str, &'static str), Vec<Duration>>>;

/// Runs `routine` `iters` times, each after an untimed `setup`, recording every duration.
fn timed<S>(
    samples: &Samples,
    key: (&'static str, &'static str),
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut routine: impl FnMut(S),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let input = setup();
        let start = Instant::now();
        routine(input);
        let elapsed = start.elapsed();
        total += elapsed;
        samples.borrow_mut().entry(key).or_default().push(elapsed);
    }
    total
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let samples: Samples = RefCell::default();

    for (label, size) in SIZES {
        let fx = fixture(size);
        let fx = &fx;
        let mut group = criterion.benchmark_group("switch");

        // start: state {a}, b sits unreferenced in packages/ -> staged again -> start.
        fx.repo.stop_experiment(&fx.name).unwrap();
        group.bench_with_input(
            BenchmarkId::new("experiment_start", label),
            &(),
            |bench, ()| {
                bench.iter_custom(|iters| {
                    timed(
                        &samples,
                        ("experiment_start", label),
                        iters,
                        || {
                            if fx
                                .repo
                                .state(&fx.name)
                                .unwrap()
                                .unwrap()
                                .experiment
                                .is_some()
                            {
                                fx.repo.stop_experiment(&fx.name).unwrap();
                            }
                            cycle(fx, &fx.b)
                        },
                        |staged| fx.repo.start_experiment(&fx.name, &fx.b, staged).unwrap(),
                    )
                });
            },
        );

        // stop: state {a, b} -> stop.
        group.bench_with_input(
            BenchmarkId::new("experiment_stop", label),
            &(),
            |bench, ()| {
                bench.iter_custom(|iters| {
                    timed(
                        &samples,
                        ("experiment_stop", label),
                        iters,
                        || {
                            if fx
                                .repo
                                .state(&fx.name)
                                .unwrap()
                                .unwrap()
                                .experiment
                                .is_none()
                            {
                                let staged = cycle(fx, &fx.b);
                                fx.repo.start_experiment(&fx.name, &fx.b, staged).unwrap();
                            }
                        },
                        |()| fx.repo.stop_experiment(&fx.name).unwrap(),
                    )
                });
            },
        );

        // promote: state {x, y} -> promote -> {y}; the next setup starts x again.
        group.bench_with_input(
            BenchmarkId::new("experiment_promote", label),
            &(),
            |bench, ()| {
                bench.iter_custom(|iters| {
                    timed(
                        &samples,
                        ("experiment_promote", label),
                        iters,
                        || {
                            let state = fx.repo.state(&fx.name).unwrap().unwrap();
                            if state.experiment.is_none() {
                                let other = if state.stable == fx.a { &fx.b } else { &fx.a };
                                let staged = cycle(fx, other);
                                fx.repo.start_experiment(&fx.name, other, staged).unwrap();
                            }
                        },
                        |()| fx.repo.promote_experiment(&fx.name).unwrap(),
                    )
                });
            },
        );
        group.finish();
    }
    criterion.final_summary();

    let mut samples = samples.into_inner();
    println!("\nper-iteration medians (this run):");
    println!(
        "| operation | {} | largest / smallest |",
        SIZES.map(|s| s.0).join(" | ")
    );
    println!("|---|{}---|", "---|".repeat(SIZES.len()));
    for op in ["experiment_start", "experiment_stop", "experiment_promote"] {
        let medians: Vec<Duration> = SIZES
            .iter()
            .filter_map(|(label, _)| samples.get_mut(&(op, *label)).map(|v| median(v)))
            .collect();
        if medians.len() != SIZES.len() {
            continue; // filtered out on the command line
        }
        let cells: Vec<String> = medians
            .iter()
            .map(|d| format!("{:.3} ms", d.as_secs_f64() * 1e3))
            .collect();
        let ratio = medians[2].as_secs_f64() / medians[0].as_secs_f64();
        println!("| {op} | {} | {ratio:.2} |", cells.join(" | "));
    }
}
