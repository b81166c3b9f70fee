//! Feature vectors: joining the features of several windows that end at the
//! same instant into one ordered vector.
//!
//! A vector for end `e` is emitted once every window state it draws on has
//! produced features for `e`. An end is given up (counted as incomplete) once
//! every one of them has moved past `e` and some produced nothing there (a
//! gap, too few readings, only Bad readings). Both depend only on each
//! signal's own readings, so the vectors do not depend on how readings were
//! split into pushes or how signals were interleaved, with one exception: if
//! one signal runs more than [`MAX_PENDING`] window ends ahead of another,
//! the oldest waiting ends are given up (counted as overflowed).

use std::collections::VecDeque;

use crate::output::{FeatureVector, Output, VectorSchema};

/// Most window ends a vector keeps waiting for its slowest signal.
pub const MAX_PENDING: usize = 1024;

/// What happened to one vector's window ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorStats {
    /// Vectors emitted.
    pub emitted: u64,
    /// Ends given up because a window had no features there.
    pub incomplete: u64,
    /// Ends given up because too many were waiting.
    pub overflowed: u64,
}

/// One window state feeding a vector.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The window state's index in the pipeline.
    pub window: usize,
    /// (index in the window's features, position in the vector).
    pub picks: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
struct Pending {
    end: i64,
    values: Vec<f32>,
    filled: usize,
}

/// One configured vector and the ends it waits on.
#[derive(Debug, Clone)]
pub(crate) struct Joiner {
    pub schema: VectorSchema,
    pub sources: Vec<Source>,
    pending: VecDeque<Pending>,
    spare: Vec<Vec<f32>>,
    /// No more vectors for ends at or before this.
    resolved: i64,
    pub stats: VectorStats,
}

impl Joiner {
    pub fn new(schema: VectorSchema, sources: Vec<Source>) -> Joiner {
        Joiner {
            schema,
            sources,
            pending: VecDeque::new(),
            spare: Vec::new(),
            resolved: i64::MIN,
            stats: VectorStats::default(),
        }
    }

    /// Source `source` produced `features` for the window ending at `end`.
    pub fn contribute(&mut self, source: usize, end: i64, features: &[f64]) {
        if end <= self.resolved {
            return;
        }
        let index = match self.pending.iter().rposition(|p| p.end <= end) {
            Some(i) if self.pending[i].end == end => i,
            found => {
                let mut at = found.map_or(0, |i| i + 1);
                if self.pending.len() >= MAX_PENDING {
                    self.give_up_oldest();
                    if end <= self.resolved {
                        return;
                    }
                    // The entry given up was earlier than `end`.
                    at = at.saturating_sub(1);
                }
                let mut values = self.spare.pop().unwrap_or_default();
                values.clear();
                values.resize(self.schema.width(), 0.0);
                self.pending.insert(
                    at,
                    Pending {
                        end,
                        values,
                        filled: 0,
                    },
                );
                at
            }
        };
        let entry = &mut self.pending[index];
        for &(feature, position) in &self.sources[source].picks {
            entry.values[position] = features[feature] as f32;
        }
        entry.filled += 1;
    }

    fn give_up_oldest(&mut self) {
        if let Some(p) = self.pending.pop_front() {
            self.stats.overflowed += 1;
            self.resolved = self.resolved.max(p.end);
            self.spare.push(p.values);
        }
    }

    /// Every source has closed all windows ending at or before `watermark`:
    /// emits or gives up those ends.
    pub fn drain(&mut self, watermark: i64, out: &mut Output) {
        while let Some(front) = self.pending.front() {
            if front.end > watermark {
                break;
            }
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            self.resolved = self.resolved.max(p.end);
            if p.filled == self.sources.len() {
                self.stats.emitted += 1;
                let mut values = out.value_buffer();
                values.extend_from_slice(&p.values);
                out.push_vector(FeatureVector {
                    name: self.schema_name(),
                    ts_ns: p.end,
                    values,
                    names: self.schema_names(),
                });
            } else {
                self.stats.incomplete += 1;
            }
            self.spare.push(p.values);
        }
        self.resolved = self.resolved.max(watermark);
    }

    fn schema_name(&self) -> std::sync::Arc<str> {
        self.schema.shared_name()
    }

    fn schema_names(&self) -> std::sync::Arc<[String]> {
        self.schema.shared_features()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joiner() -> Joiner {
        let schema = VectorSchema::new("v", vec!["a.x.mean".into(), "b.y.max".into()]);
        Joiner::new(
            schema,
            vec![
                Source {
                    window: 0,
                    picks: vec![(0, 0)],
                },
                Source {
                    window: 1,
                    picks: vec![(1, 1)],
                },
            ],
        )
    }

    fn emitted(out: &Output) -> Vec<(i64, Vec<f32>)> {
        out.vectors()
            .iter()
            .map(|v| (v.ts_ns, v.values.clone()))
            .collect()
    }

    #[test]
    fn joins_on_the_window_end_in_order() {
        let mut j = joiner();
        let mut out = Output::new();
        j.contribute(0, 10, &[1.0]);
        j.contribute(0, 20, &[2.0]);
        j.drain(0, &mut out); // the slowest source has only reached 0
        assert!(out.vectors().is_empty());
        j.contribute(1, 10, &[0.0, 5.0]);
        j.drain(10, &mut out);
        assert_eq!(emitted(&out), vec![(10, vec![1.0, 5.0])]);
        // Source 1 skips 20 (a gap) and reaches 30: 20 is incomplete.
        j.contribute(1, 30, &[0.0, 7.0]);
        j.drain(20, &mut out);
        j.contribute(0, 30, &[3.0]);
        j.drain(30, &mut out);
        assert_eq!(
            emitted(&out),
            vec![(10, vec![1.0, 5.0]), (30, vec![3.0, 7.0])]
        );
        assert_eq!(
            j.stats,
            VectorStats {
                emitted: 2,
                incomplete: 1,
                overflowed: 0
            }
        );
        // A late contribution for a given-up end is ignored.
        j.contribute(0, 20, &[9.0]);
        j.drain(30, &mut out);
        assert_eq!(out.vectors().len(), 2);
    }

    #[test]
    fn a_silent_source_costs_bounded_memory() {
        let mut j = joiner();
        let mut out = Output::new();
        for end in 0..(MAX_PENDING as i64 + 10) {
            j.contribute(0, end, &[end as f64]);
        }
        assert_eq!(j.pending.len(), MAX_PENDING);
        assert_eq!(j.stats.overflowed, 10);
        j.contribute(1, 5, &[0.0, 1.0]); // given up already
        j.contribute(1, 10, &[0.0, 1.0]);
        j.drain(10, &mut out);
        assert_eq!(emitted(&out), vec![(10, vec![10.0, 1.0])]);
    }
}
