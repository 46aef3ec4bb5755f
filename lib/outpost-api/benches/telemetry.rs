//! Rendering the exposition of 10,000 dynamic series (target: well under 10 ms), and the cost
//! of a dynamic `set_gauge` on an existing series.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use outpost_api::Telemetry;

fn registry(series: usize) -> Telemetry {
    let t = Telemetry::new();
    for i in 0..series {
        let check = format!("check_{}", i % 100);
        let instance = format!("instance-{i}");
        let name = format!("outpost.check.metric_{}", i % 50);
        t.set_gauge(
            &name,
            &[
                ("check", &check),
                ("instance", &instance),
                ("env", "prod \"eu\""),
            ],
            f64::from(u32::try_from(i).unwrap_or(u32::MAX)) * 0.5,
        )
        .expect("gauge");
    }
    t
}

fn bench(c: &mut Criterion) {
    let t = registry(10_000);
    assert_eq!(t.series_count(), 10_000);
    let mut group = c.benchmark_group("telemetry");
    group.throughput(Throughput::Elements(10_000));
    group.bench_function("render_10k_series", |b| b.iter(|| black_box(t.render())));
    group.finish();
    c.bench_function("telemetry/set_gauge_existing", |b| {
        b.iter(|| {
            t.set_gauge(
                "outpost.check.metric_7",
                &[
                    ("check", "check_7"),
                    ("instance", "instance-7"),
                    ("env", "prod \"eu\""),
                ],
                black_box(1.0),
            )
            .expect("gauge");
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
