//! What the benchmark examples share: latency figures from a run of timed calls, and the table
//! that compares them as ratios against the run's baseline (its first row).

use std::time::Duration;

/// How many calls a benchmark times: `SLIPWAY_BENCH_CALLS`, else `default`.
pub fn calls(default: usize) -> anyhow::Result<usize> {
    Ok(std::env::var("SLIPWAY_BENCH_CALLS")
        .ok()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(default))
}

pub struct Figures {
    pub p50: Duration,
    pub p99: Duration,
    pub mean: Duration,
}

impl Figures {
    pub fn of(mut took: Vec<Duration>) -> Self {
        assert!(!took.is_empty(), "no calls were timed");
        took.sort();
        let n = took.len();
        Self {
            p50: took[n / 2],
            p99: took[n * 99 / 100],
            mean: took.iter().sum::<Duration>() / n as u32,
        }
    }
}

/// Prints one row per measurement, the last column its p50 over the first row's.
pub fn print_table(first_column: &str, ratio_column: &str, rows: &[(&str, Figures)]) {
    let Some((_, baseline)) = rows.first() else {
        return;
    };
    let baseline = baseline.p50.as_secs_f64();
    println!(
        "{first_column:<24} {:>9} {:>9} {:>9} {ratio_column:>10}",
        "p50", "p99", "mean"
    );
    for (name, f) in rows {
        println!(
            "{name:<24} {:>9.2?} {:>9.2?} {:>9.2?} {:>10.2}",
            f.p50,
            f.p99,
            f.mean,
            f.p50.as_secs_f64() / baseline
        );
    }
}
