//! Fuzzing on the stable toolchain (cargo-fuzz needs nightly, which a fresh machine cannot
//! download): proptest strategies drive a parser for a while, every input is checked against
//! the parser's properties, and a panic is a failure with the input that caused it. In the
//! normal test run each target gets a short run; `scripts/fuzz.sh` runs each for minutes
//! (`HOOKOPS_FUZZ_SECONDS`) and prints how many inputs it saw (docs/security.md quotes them).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// How long each target runs: `HOOKOPS_FUZZ_SECONDS`, else a short run for the test suite.
fn budget() -> (Duration, Option<u64>) {
    match std::env::var("HOOKOPS_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(secs) => (Duration::from_secs(secs), None),
        None => (Duration::from_secs(3600), Some(300)),
    }
}

/// Feeds inputs from `strategy` to `check` until the budget is spent; panics (failing the
/// test) with the first input whose check panicked. Prints `fuzz NAME: N inputs in S s`.
pub fn run<S: Strategy>(name: &str, strategy: S, check: impl Fn(&S::Value))
where
    S::Value: std::fmt::Debug,
{
    let (time, cases) = budget();
    // A fresh seed each run (printed, so a failure can be replayed), unless one is given.
    let seed: u64 = std::env::var("HOOKOPS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let started = Instant::now();
    let mut n: u64 = 0;
    while started.elapsed() < time && cases.is_none_or(|c| n < c) {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let input = tree.current();
        if catch_unwind(AssertUnwindSafe(|| check(&input))).is_err() {
            panic!("fuzz {name}: input {n} (HOOKOPS_FUZZ_SEED={seed}) failed: {input:?}");
        }
        n += 1;
    }
    println!(
        "fuzz {name}: {n} inputs in {:.0} s, none failed (seed {seed})",
        started.elapsed().as_secs_f64()
    );
}

/// Strings assembled from `tokens` (the format's own pieces reach deeper than random text),
/// arbitrary text and control characters.
pub fn assembled(tokens: Vec<String>, max: usize) -> impl Strategy<Value = String> {
    use proptest::prelude::*;
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(tokens),
            1 => any::<String>(),
            1 => "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{202e}]{1,3}",
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}
