//! A range query's answer, built the same way by every backend: raw
//! points in time order, or min/max/avg buckets, cut at the query's limit.
//! It holds no more than the limit (and one more, to tell that the answer
//! was cut), however many readings the range has: a year of a 1 kHz
//! signal asked with `limit = 100` keeps 101 points, not 31 billion.

use std::collections::{BTreeMap, BinaryHeap};

use crate::{Bucket, Point, RangeQuery, RangeResult};

/// Collects the readings of a range query, then answers it.
pub(crate) struct Collector<'q> {
    query: &'q RangeQuery,
    /// The earliest raw points so far, at most `limit + 1`, the latest on
    /// top; ties in time keep the order they came in.
    points: BinaryHeap<Held>,
    added: u64,
    /// The earliest buckets so far, at most `limit + 1`.
    buckets: BTreeMap<i64, Bucket>,
}

/// A raw point, ordered by time then arrival.
struct Held {
    ts_ns: i64,
    arrival: u64,
    point: Point,
}

impl PartialEq for Held {
    fn eq(&self, other: &Self) -> bool {
        (self.ts_ns, self.arrival) == (other.ts_ns, other.arrival)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Held {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts_ns, self.arrival).cmp(&(other.ts_ns, other.arrival))
    }
}

impl<'q> Collector<'q> {
    pub fn new(query: &'q RangeQuery) -> Self {
        Collector {
            query,
            points: BinaryHeap::new(),
            added: 0,
            buckets: BTreeMap::new(),
        }
    }

    /// Points or buckets kept at most: one past the limit says it was cut.
    fn room(&self) -> usize {
        self.query.limit.saturating_add(1)
    }

    /// Takes a reading of the queried signal (ignored outside the range).
    pub fn add(&mut self, p: Point) {
        if p.ts_ns < self.query.from_ns || p.ts_ns > self.query.to_ns {
            return;
        }
        match self.query.bucket_ns {
            None => {
                let held = Held {
                    ts_ns: p.ts_ns,
                    arrival: self.added,
                    point: p,
                };
                self.added += 1;
                if self.points.len() < self.room() {
                    self.points.push(held);
                } else if self.points.peek().is_some_and(|top| held < *top) {
                    self.points.pop();
                    self.points.push(held);
                }
            }
            Some(width) => {
                let start = bucket_start(p.ts_ns, width);
                if self.buckets.len() >= self.room()
                    && !self.buckets.contains_key(&start)
                    && self
                        .buckets
                        .last_key_value()
                        .is_some_and(|(&last, _)| start > last)
                {
                    return;
                }
                add_to_bucket(&mut self.buckets, start, p);
                if self.buckets.len() > self.room() {
                    self.buckets.pop_last();
                }
            }
        }
    }

    /// Whether no reading at or after `ts_ns` can change the answer any
    /// more: a backend reading blocks in order of their first reading
    /// stops there.
    pub fn full_before(&self, ts_ns: i64) -> bool {
        match self.query.bucket_ns {
            None => {
                self.points.len() >= self.room()
                    && self.points.peek().is_some_and(|top| ts_ns > top.ts_ns)
            }
            Some(width) => {
                self.buckets.len() >= self.room()
                    && self
                        .buckets
                        .last_key_value()
                        .is_some_and(|(&last, _)| bucket_start(ts_ns, width) > last)
            }
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
            let mut points: Vec<Point> = self
                .points
                .into_sorted_vec()
                .into_iter()
                .map(|h| h.point)
                .collect();
            result.truncated = points.len() > limit;
            points.truncate(limit);
            result.points = points;
        }
        result
    }
}

/// The start of the bucket of width `width` that holds `ts_ns`.
fn bucket_start(ts_ns: i64, width: i64) -> i64 {
    // In i128: near i64::MIN the bucket start would overflow i64.
    (i128::from(ts_ns).div_euclid(i128::from(width)) * i128::from(width)).max(i128::from(i64::MIN))
        as i64
}

/// Accumulates `p` into the bucket at `start`; `avg` holds the running
/// sum until the end.
fn add_to_bucket(buckets: &mut BTreeMap<i64, Bucket>, start: i64, p: Point) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::DeviceId;

    fn query(bucket_ns: Option<i64>, limit: usize) -> RangeQuery {
        RangeQuery {
            device: DeviceId::new("d".to_string()).unwrap(),
            signal: "s".into(),
            from_ns: 0,
            to_ns: i64::MAX,
            bucket_ns,
            limit,
        }
    }

    fn point(ts_ns: i64, value: f64) -> Point {
        Point {
            ts_ns,
            value,
            quality: 0,
        }
    }

    #[test]
    fn the_earliest_points_up_to_the_limit_in_any_arrival_order() {
        let q = query(None, 3);
        let mut c = Collector::new(&q);
        // Out of order, with a tie at 5 (kept in arrival order).
        for (ts, v) in [(9, 0.0), (5, 1.0), (7, 2.0), (5, 3.0), (1, 4.0), (8, 5.0)] {
            c.add(point(ts, v));
        }
        assert_eq!(c.points.len(), 4, "holds the limit and one more");
        assert!(c.full_before(8) && !c.full_before(7));
        let r = c.finish();
        assert!(r.truncated);
        let got: Vec<_> = r.points.iter().map(|p| (p.ts_ns, p.value)).collect();
        assert_eq!(got, [(1, 4.0), (5, 1.0), (5, 3.0)]);

        let q = query(None, 10);
        let mut c = Collector::new(&q);
        c.add(point(2, 0.0));
        c.add(point(1, 1.0));
        assert!(!c.full_before(i64::MAX));
        let r = c.finish();
        assert!(!r.truncated);
        assert_eq!(r.points.len(), 2);
    }

    #[test]
    fn the_earliest_buckets_up_to_the_limit_whole() {
        let q = query(Some(10), 2);
        let mut c = Collector::new(&q);
        // Buckets 30, 20, 0 and 10 appear in that order; 30 and 20 are
        // let go as earlier ones come, and 30 is not taken again.
        for (ts, v) in [
            (31, 9.0),
            (21, 5.0),
            (1, 1.0),
            (2, 3.0),
            (11, 2.0),
            (35, 9.0),
            (15, 4.0),
        ] {
            c.add(point(ts, v));
        }
        assert_eq!(c.buckets.len(), 3);
        assert!(c.full_before(30) && !c.full_before(29));
        let r = c.finish();
        assert!(r.truncated);
        let got: Vec<_> = r
            .buckets
            .iter()
            .map(|b| (b.start_ns, b.min, b.max, b.avg, b.count))
            .collect();
        assert_eq!(got, [(0, 1.0, 3.0, 2.0, 2), (10, 2.0, 4.0, 3.0, 2)]);
    }
}
