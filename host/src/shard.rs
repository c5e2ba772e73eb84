//! Values written on every call, one copy per worker: a worker writes its own (its
//! number, from [`enter`]), so a counter written on every call never moves a cache line
//! between cores; any other thread gets a copy by turns. Readers add the copies up.
//! [`Counter`] and [`Histogram`] are Prometheus metrics built so.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Copies of each sharded value: the cores the process may use, rounded up to a power of
/// two (at most 64; workers past it share).
pub(crate) static SHARDS: LazyLock<usize> = LazyLock::new(|| {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get).next_power_of_two().min(64)
});

/// Marks this thread as worker `worker`.
pub(crate) fn enter(worker: usize) {
    INDEX.set(worker);
}

/// This thread's copy, below [`SHARDS`].
#[inline]
pub(crate) fn index() -> usize {
    let index = INDEX.get();
    let index = if index == usize::MAX {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let next = NEXT.fetch_add(1, Ordering::Relaxed);
        INDEX.set(next);
        next
    } else {
        index
    };
    index & (*SHARDS - 1)
}

/// One copy, alone in its cache lines (two, as the adjacent-line prefetcher pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// A Prometheus counter written on the call path: one copy per worker, added up when read.
#[derive(Debug, Clone)]
pub(crate) struct Counter {
    shards: Arc<[Padded<AtomicU64>]>,
}

impl Default for Counter {
    fn default() -> Self {
        Counter { shards: (0..*SHARDS).map(|_| Padded::default()).collect() }
    }
}

impl Counter {
    /// Adds one.
    #[inline]
    pub(crate) fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.shards[index()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of every worker's copy.
    pub(crate) fn get(&self) -> u64 {
        self.shards.iter().map(|s| s.0.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for Counter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for Counter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Bucket bounds a [`Histogram`] takes at most (+Inf is one more).
const MOST_BOUNDS: usize = 15;

/// A Prometheus histogram written on the call path: one copy of its count, sum and
/// buckets per worker, added up when read (prometheus-client's own takes a lock shared by
/// every thread for each observation).
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    bounds: Arc<[f64]>,
    shards: Arc<[Padded<HistogramShard>]>,
}

#[derive(Debug, Default)]
struct HistogramShard {
    count: AtomicU64,
    /// The sum's `f64` bits.
    sum: AtomicU64,
    /// Observations per bucket (not cumulative); the last is +Inf.
    buckets: [AtomicU64; MOST_BOUNDS + 1],
}

impl Histogram {
    /// A histogram with these finite upper bounds, ascending (at most 15).
    pub(crate) fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Arc<[f64]> = bounds.into_iter().filter(|b| b.is_finite()).take(MOST_BOUNDS).collect();
        Histogram { bounds, shards: (0..*SHARDS).map(|_| Padded::default()).collect() }
    }

    /// Records `value`.
    #[inline]
    pub(crate) fn observe(&self, value: f64) {
        let bucket = self.bounds.iter().position(|&b| value <= b).unwrap_or(self.bounds.len());
        let shard = &self.shards[index()].0;
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.count.fetch_add(1, Ordering::Relaxed);
        // This worker's copy: no other thread adds to it, so the first try succeeds.
        let _ = shard
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    /// Observations so far, every worker's.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.shards.iter().map(|s| s.0.count.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets: Vec<(f64, u64)> =
            self.bounds.iter().copied().chain(std::iter::once(f64::INFINITY)).map(|b| (b, 0)).collect();
        let (mut sum, mut count) = (0.0, 0);
        for shard in self.shards.iter() {
            let shard = &shard.0;
            count += shard.count.load(Ordering::Relaxed);
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
            for (total, n) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += n.load(Ordering::Relaxed);
            }
        }
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_written_on_several_threads_add_up() {
        let counter = Counter::default();
        let histogram = Histogram::new([1.0, 10.0]);
        std::thread::scope(|s| {
            for worker in 0..4 {
                let (counter, histogram) = (&counter, &histogram);
                s.spawn(move || {
                    enter(worker);
                    for i in 0..1000 {
                        counter.inc();
                        histogram.observe(f64::from(i % 20));
                    }
                });
            }
        });
        assert_eq!(counter.get(), 4000);
        assert_eq!(histogram.count(), 4000);
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("calls", "Calls", counter);
        registry.register("seconds", "Seconds", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encoded");
        assert!(text.contains("calls_total 4000"), "{text}");
        // 0 and 1 in the first bucket (le 1), 0..=10 in the second, all in +Inf.
        assert!(text.contains("seconds_bucket{le=\"1.0\"} 400"), "{text}");
        assert!(text.contains("seconds_bucket{le=\"10.0\"} 2200"), "{text}");
        assert!(text.contains("seconds_bucket{le=\"+Inf\"} 4000"), "{text}");
        // 4 threads × 50 cycles × (0 + 1 + … + 19).
        assert!(text.contains("seconds_sum 38000.0"), "{text}");
        assert!(text.contains("seconds_count 4000"), "{text}");
    }
}
