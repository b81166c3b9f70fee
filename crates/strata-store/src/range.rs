//! A range query's answer, built the same way by every backend: raw
//! points in time order, or min/max/avg buckets, cut at the query's limit.

use std::collections::BTreeMap;

use crate::{Bucket, Point, RangeQuery, RangeResult};

/// Collects the readings of a range query, then answers it.
pub(crate) struct Collector<'q> {
    query: &'q RangeQuery,
    points: Vec<Point>,
    buckets: BTreeMap<i64, Bucket>,
}

impl<'q> Collector<'q> {
    pub fn new(query: &'q RangeQuery) -> Self {
        Collector {
            query,
            points: Vec::new(),
            buckets: BTreeMap::new(),
        }
    }

    /// Takes a reading of the queried signal (ignored outside the range).
    pub fn add(&mut self, p: Point) {
        if p.ts_ns < self.query.from_ns || p.ts_ns > self.query.to_ns {
            return;
        }
        match self.query.bucket_ns {
            None => self.points.push(p),
            Some(width) => add_to_bucket(&mut self.buckets, width, p),
        }
    }

    /// The answer.
    pub fn finish(self) -> RangeResult {
        let limit = self.query.limit;
        let mut result = RangeResult::default();
        if self.query.bucket_ns.is_some() {
            result.truncated = self.buckets.len() > limit;
            result.buckets = self
                .buckets
                .into_values()
                .take(limit)
                .map(|mut b| {
                    b.avg /= b.count as f64;
                    b
                })
                .collect();
        } else {
            let mut points = self.points;
            points.sort_by_key(|p: &Point| p.ts_ns);
            result.truncated = points.len() > limit;
            points.truncate(limit);
            result.points = points;
        }
        result
    }
}

/// Accumulates `p` into its bucket; `avg` holds the running sum until the end.
fn add_to_bucket(buckets: &mut BTreeMap<i64, Bucket>, width: i64, p: Point) {
    // In i128: near i64::MIN the bucket start would overflow i64.
    let start = (i128::from(p.ts_ns).div_euclid(i128::from(width)) * i128::from(width))
        .max(i128::from(i64::MIN)) as i64;
    let b = buckets.entry(start).or_insert(Bucket {
        start_ns: start,
        min: f64::INFINITY,
        max: f64::NEG_INFINITY,
        avg: 0.0,
        count: 0,
    });
    b.min = b.min.min(p.value);
    b.max = b.max.max(p.value);
    b.avg += p.value;
    b.count += 1;
}
