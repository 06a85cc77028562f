//! A small log-linear latency histogram (microseconds), for benchmarks that see millions of
//! samples: values below 128 µs are exact, above that each power of two is split into 128
//! buckets (relative error under 0.8 %). The maximum is kept exactly. Cheap to record into,
//! cheap to merge; about 15 KB each.

/// Sub-buckets per power of two, as a bit count.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered above the exact range (up to 2^36 µs, about 19 hours).
const OCTAVES: usize = 30;
const BUCKETS: usize = (OCTAVES + 1) * SUB as usize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
}

impl Summary {
    /// `p50 / p90 / p99 / p99.9 / max` in milliseconds with `decimals` decimals, as the
    /// reports' tables print them.
    pub(crate) fn ms_row(&self, decimals: usize) -> String {
        [self.p50, self.p90, self.p99, self.p999, self.max]
            .map(|us| format!("{:.decimals$}", us / 1000.0))
            .join(" / ")
    }
}

/// The histogram.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    buckets: Vec<u32>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (value >> shift) & (SUB - 1);
    (((shift as usize) + 1) << SUB_BITS) + sub as usize
}

/// The middle of bucket `i`'s value range.
fn midpoint(i: usize) -> f64 {
    if (i as u64) < SUB {
        return i as f64;
    }
    let shift = (i >> SUB_BITS) - 1;
    let sub = (i as u64) & (SUB - 1);
    let low = (SUB + sub) << shift;
    let width = 1u64 << shift;
    low as f64 + (width as f64 - 1.0) / 2.0
}

impl Histogram {
    /// The mean, from the 1 % quantiles (the histogram keeps no sum).
    pub(crate) fn mean(&self) -> f64 {
        (0..100)
            .map(|i| self.quantile((f64::from(i) + 0.5) / 100.0))
            .sum::<f64>()
            / 100.0
    }

    pub(crate) fn new() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            max: 0,
        }
    }

    /// Records one value, in µs.
    pub(crate) fn record(&mut self, micros: u64) {
        let i = index(micros).min(BUCKETS - 1);
        self.buckets[i] = self.buckets[i].saturating_add(1);
        self.count += 1;
        self.max = self.max.max(micros);
    }

    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// The value below which `q` (0..=1) of the samples fall (the sample of rank ceil(q·n)).
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return midpoint(i).min(self.max as f64);
            }
        }
        self.max as f64
    }

    pub(crate) fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.max as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ms_row_prints_the_five_figures_in_milliseconds() {
        let s = super::Summary {
            count: 3,
            p50: 1_500.0,
            p90: 2_000.0,
            p99: 12_345.0,
            p999: 20_000.0,
            max: 30_000.0,
        };
        assert_eq!(s.ms_row(2), "1.50 / 2.00 / 12.35 / 20.00 / 30.00");
        assert_eq!(s.ms_row(0), "2 / 2 / 12 / 20 / 30");
    }

    use super::{Histogram, index, midpoint};

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            255,
            256,
            1000,
            65_535,
            1 << 30,
            1 << 35,
        ] {
            let i = index(v);
            assert!(i >= last, "{v}");
            last = i;
            let mid = midpoint(i);
            assert!(
                (mid - v as f64).abs() <= (v as f64) / 128.0 + 0.5,
                "{v} -> {mid}"
            );
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Histogram::new();
        for v in 1..=1000u64 {
            h.record(v);
        }
        let s = h.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50 - 500.0).abs() < 5.0, "{s:?}");
        assert!((s.p99 - 990.0).abs() < 8.0, "{s:?}");
        assert!((s.max - 1000.0).abs() < f64::EPSILON);
        let mut other = Histogram::new();
        other.record(5000);
        h.merge(&other);
        assert_eq!(h.summary().count, 1001);
        assert!((h.summary().max - 5000.0).abs() < f64::EPSILON);
    }
}
