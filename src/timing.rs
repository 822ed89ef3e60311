//! Where an attempt's time goes: one timed span per step of every attempt
//! this process ran, kept as a Prometheus histogram (served at `/metrics`
//! as `formwright_attempt_step_seconds{step, phase}`) and as recent samples
//! for the medians and 95th percentiles the demo prints.
//!
//! The spans of one attempt, in order:
//!
//! ```text
//! clone      a browser carrying a fresh copy of the master's login: a new
//!            Chromium on a profile copy (fresh), or a warm pooled one
//!            wiped and given the cookies (pooled)
//! navigate   the dashboard page loading (for a pooled browser that
//!            preloaded it while parked: the portal answering the request
//!            that confirms it)
//! check      deciding that the copy is logged in
//! ready      the three above together: the attempt's browser overhead,
//!            from its start to a logged-in dashboard
//! <step>     each form step of the profile by its name, the submit step
//!            (the save) and the post-submit reads included
//! ```
//!
//! and, in the background (phase `pool`), a pooled browser's `wipe` after
//! its attempt and its `preload` of the dashboard while parked.
//!
//! Unlike the other metrics these are not in the journal: they describe
//! this process since it started, and a restart begins them afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

/// The span of getting a logged-in browser for an attempt.
pub const CLONE: &str = "clone";
/// The span of loading the dashboard in that browser.
pub const NAVIGATE: &str = "navigate";
/// The span of deciding whether the copy is logged in.
pub const CHECK: &str = "check";
/// The span from an attempt's start to its copy found logged in: clone,
/// navigate and check together.
pub const READY: &str = "ready";
/// The phase label of the four spans above.
pub const OPEN_PHASE: &str = "open";
/// The background span of wiping a pooled browser its attempt returned.
pub const WIPE: &str = "wipe";
/// The background span of a parked pooled browser preloading the
/// dashboard with the master's login.
pub const PRELOAD: &str = "preload";
/// The phase label of the pool's background spans, which no attempt waits
/// for (they take machine time all the same).
pub const POOL_PHASE: &str = "pool";

/// Samples kept per step for the quantiles; older ones are dropped.
const RECENT: usize = 4096;

/// Labels of one histogram: the step's name and its phase.
pub type StepLabels = Vec<(String, String)>;

type StepHistograms = Family<StepLabels, Histogram, fn() -> Histogram>;

fn step_histogram() -> Histogram {
    // 5 ms to about 82 s: a click to a long wait for the portal.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The timed spans of every attempt so far. Shared by the browsers that
/// record and the API and demo that read; cheap to record into.
pub struct StepTimes {
    histograms: StepHistograms,
    series: Mutex<Series>,
}

#[derive(Default)]
struct Series {
    /// Step keys in the order they were first seen (attempt order).
    order: Vec<(String, String)>,
    by_key: HashMap<(String, String), Samples>,
}

#[derive(Default)]
struct Samples {
    count: u64,
    total: Duration,
    recent: VecDeque<Duration>,
}

/// One step's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct StepSummary {
    /// The span's name: `clone`, `navigate`, `check` or a profile step.
    pub step: String,
    /// `open` for the first three; a profile phase for the steps.
    pub phase: String,
    /// Spans recorded.
    pub count: u64,
    /// Their sum.
    pub total: Duration,
    /// Median of the recent samples.
    pub median: Duration,
    /// 95th percentile of the recent samples.
    pub p95: Duration,
}

impl Default for StepTimes {
    fn default() -> Self {
        StepTimes {
            histograms: Family::new_with_constructor(step_histogram),
            series: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for StepTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepTimes").finish_non_exhaustive()
    }
}

impl StepTimes {
    /// Nothing recorded yet.
    pub fn new() -> StepTimes {
        StepTimes::default()
    }

    /// Records one span.
    pub fn record(&self, step: &str, phase: &str, elapsed: Duration) {
        let labels = vec![
            ("step".to_string(), step.to_string()),
            ("phase".to_string(), phase.to_string()),
        ];
        self.histograms
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let Ok(mut series) = self.series.lock() else {
            return;
        };
        let key = (step.to_string(), phase.to_string());
        if !series.by_key.contains_key(&key) {
            series.order.push(key.clone());
        }
        let samples = series.by_key.entry(key).or_default();
        samples.count += 1;
        samples.total += elapsed;
        if samples.recent.len() == RECENT {
            samples.recent.pop_front();
        }
        samples.recent.push_back(elapsed);
    }

    /// The histogram family, for a metrics registry.
    pub fn histograms(&self) -> Family<StepLabels, Histogram, fn() -> Histogram> {
        self.histograms.clone()
    }

    /// Every step's figures, in the order the steps first ran.
    pub fn summary(&self) -> Vec<StepSummary> {
        let Ok(series) = self.series.lock() else {
            return Vec::new();
        };
        series
            .order
            .iter()
            .filter_map(|key| {
                let s = series.by_key.get(key)?;
                let mut sorted: Vec<Duration> = s.recent.iter().copied().collect();
                sorted.sort();
                Some(StepSummary {
                    step: key.0.clone(),
                    phase: key.1.clone(),
                    count: s.count,
                    total: s.total,
                    median: quantile(&sorted, 0.5),
                    p95: quantile(&sorted, 0.95),
                })
            })
            .collect()
    }

    /// One step's figures, if it ran.
    pub fn step(&self, step: &str) -> Option<StepSummary> {
        self.summary().into_iter().find(|s| s.step == step)
    }
}

/// The nearest-rank quantile of sorted samples; zero for none.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=20).map(ms).collect();
        assert_eq!(quantile(&sorted, 0.5), ms(10));
        assert_eq!(quantile(&sorted, 0.95), ms(19));
        assert_eq!(quantile(&sorted[..1], 0.95), ms(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn steps_keep_their_first_order_and_figures() {
        let times = StepTimes::new();
        for n in [30, 10, 20] {
            times.record(CLONE, OPEN_PHASE, ms(n));
            times.record("first name", "pre_submit", ms(n * 2));
        }
        times.record(NAVIGATE, OPEN_PHASE, ms(5));
        let summary = times.summary();
        let names: Vec<&str> = summary.iter().map(|s| s.step.as_str()).collect();
        assert_eq!(names, [CLONE, "first name", NAVIGATE]);
        let clone = &summary[0];
        assert_eq!(
            (clone.count, clone.total, clone.median, clone.p95),
            (3, ms(60), ms(20), ms(30))
        );
        assert_eq!(times.step("first name").unwrap().median, ms(40));
    }

    #[test]
    fn the_histogram_is_labelled_by_step_and_phase() {
        let times = StepTimes::new();
        times.record(CHECK, OPEN_PHASE, ms(120));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("attempt_step_seconds", "spans", times.histograms());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"attempt_step_seconds_count{step="check",phase="open"} 1"#),
            "{text}"
        );
    }
}
