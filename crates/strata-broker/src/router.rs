//! Subscription routing: a trie of topic-filter levels (`+` and `#` stored as
//! ordinary keys) mapping each filter to its subscribers, plus shared
//! subscription groups that deliver each message to one member, round-robin.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use strata_mqtt::QoS;
use strata_mqtt::topic::parse_shared;

use crate::session::Session;

/// One subscriber of one filter.
#[derive(Debug, Clone)]
pub(crate) struct Subscriber {
    pub session: Arc<Session>,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub subscription_id: Option<u32>,
}

#[derive(Debug, Default)]
struct SharedGroup {
    members: Vec<Subscriber>,
    next: AtomicUsize,
}

#[derive(Debug, Default)]
struct Node {
    children: HashMap<String, Node>,
    subscribers: Vec<Subscriber>,
    shared: HashMap<String, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.shared.is_empty()
    }
}

/// Where a message goes: one entry per receiving session (shared picks
/// included), with the subscription's options merged.
#[derive(Debug)]
pub(crate) struct Target {
    pub session: Arc<Session>,
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub subscription_ids: Vec<u32>,
    /// Picked from a share group (never merged with other targets).
    pub shared: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Router {
    root: RwLock<Node>,
}

fn split(filter: &str) -> (Option<&str>, &str) {
    match parse_shared(filter) {
        Ok(Some(s)) => (Some(s.group), s.filter),
        _ => (None, filter),
    }
}

impl Router {
    /// Adds or replaces `sub.session`'s subscription to `filter` (which may
    /// be `$share/{group}/...`). The filter must be valid.
    pub(crate) fn subscribe(&self, filter: &str, sub: Subscriber) {
        let (group, filter) = split(filter);
        let mut root = self
            .root
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut node = &mut *root;
        for level in filter.split('/') {
            node = node.children.entry(level.to_owned()).or_default();
        }
        let list = match group {
            Some(g) => &mut node.shared.entry(g.to_owned()).or_default().members,
            None => &mut node.subscribers,
        };
        match list
            .iter_mut()
            .find(|s| Arc::ptr_eq(&s.session, &sub.session))
        {
            Some(existing) => *existing = sub,
            None => list.push(sub),
        }
    }

    /// Removes `session`'s subscription to `filter`; true if it existed.
    pub(crate) fn unsubscribe(&self, filter: &str, session: &Arc<Session>) -> bool {
        let (group, filter) = split(filter);
        let levels: Vec<&str> = filter.split('/').collect();
        let mut root = self
            .root
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        remove(&mut root, &levels, group, session)
    }

    /// All subscribers of `topic`, one target per session for ordinary
    /// subscriptions (highest QoS wins, identifiers merged) plus one chosen
    /// member per matching share group.
    pub(crate) fn targets(&self, topic: &str) -> Vec<Target> {
        let root = self
            .root
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let levels: Vec<&str> = topic.split('/').collect();
        let mut out: Vec<Target> = Vec::new();
        let dollar = topic.starts_with('$');
        collect(&root, &levels, dollar, &mut out);
        out
    }
}

fn remove(node: &mut Node, levels: &[&str], group: Option<&str>, session: &Arc<Session>) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        let removed = match group {
            Some(g) => {
                let Some(grp) = node.shared.get_mut(g) else {
                    return false;
                };
                let before = grp.members.len();
                grp.members.retain(|s| !Arc::ptr_eq(&s.session, session));
                let removed = grp.members.len() != before;
                if grp.members.is_empty() {
                    node.shared.remove(g);
                }
                removed
            }
            None => {
                let before = node.subscribers.len();
                node.subscribers
                    .retain(|s| !Arc::ptr_eq(&s.session, session));
                node.subscribers.len() != before
            }
        };
        return removed;
    };
    let Some(child) = node.children.get_mut(*first) else {
        return false;
    };
    let removed = remove(child, rest, group, session);
    if child.is_empty() {
        node.children.remove(*first);
    }
    removed
}

fn add_target(out: &mut Vec<Target>, s: &Subscriber) {
    if let Some(t) = out
        .iter_mut()
        .find(|t| !t.shared && Arc::ptr_eq(&t.session, &s.session))
    {
        t.qos = t.qos.max(s.qos);
        t.no_local &= s.no_local;
        t.retain_as_published |= s.retain_as_published;
        t.subscription_ids.extend(s.subscription_id);
        return;
    }
    out.push(Target {
        session: Arc::clone(&s.session),
        qos: s.qos,
        no_local: s.no_local,
        retain_as_published: s.retain_as_published,
        subscription_ids: s.subscription_id.into_iter().collect(),
        shared: false,
    });
}

fn add_node(node: &Node, out: &mut Vec<Target>) {
    for s in &node.subscribers {
        add_target(out, s);
    }
    for group in node.shared.values() {
        if group.members.is_empty() {
            continue;
        }
        let i = group.next.fetch_add(1, Ordering::Relaxed) % group.members.len();
        let s = &group.members[i];
        out.push(Target {
            session: Arc::clone(&s.session),
            qos: s.qos,
            no_local: s.no_local,
            retain_as_published: s.retain_as_published,
            subscription_ids: s.subscription_id.into_iter().collect(),
            shared: true,
        });
    }
}

/// `dollar` is true only at the root level of a `$`-topic, where wildcards
/// must not match.
fn collect(node: &Node, levels: &[&str], dollar: bool, out: &mut Vec<Target>) {
    if !dollar && let Some(hash) = node.children.get("#") {
        add_node(hash, out);
    }
    let Some((first, rest)) = levels.split_first() else {
        add_node(node, out);
        return;
    };
    if !dollar && let Some(plus) = node.children.get("+") {
        collect(plus, rest, false, out);
    }
    if let Some(exact) = node.children.get(*first) {
        collect(exact, rest, false, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &Arc<Session>, qos: QoS, id: Option<u32>) -> Subscriber {
        Subscriber {
            session: Arc::clone(s),
            qos,
            no_local: false,
            retain_as_published: false,
            subscription_id: id,
        }
    }

    fn names(r: &Router, topic: &str) -> Vec<String> {
        let mut v: Vec<String> = r
            .targets(topic)
            .iter()
            .map(|t| t.session.client_id.to_string())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn wildcards_dollar_topics_and_dedup() {
        let r = Router::default();
        let a = Session::new("a".into());
        let b = Session::new("b".into());
        r.subscribe("x/+/z", sub(&a, QoS::AtMostOnce, Some(1)));
        r.subscribe("x/#", sub(&a, QoS::AtLeastOnce, Some(2)));
        r.subscribe("#", sub(&b, QoS::AtMostOnce, None));
        r.subscribe("$SYS/#", sub(&b, QoS::AtMostOnce, None));
        let t = r.targets("x/y/z");
        assert_eq!(t.len(), 2);
        let ta = t.iter().find(|t| &*t.session.client_id == "a").unwrap();
        assert_eq!(ta.qos, QoS::AtLeastOnce);
        let mut ids = ta.subscription_ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(names(&r, "x"), vec!["a", "b"], "x/# matches x");
        assert_eq!(names(&r, "$SYS/load"), vec!["b"], "# does not match $SYS");
        assert!(r.unsubscribe("x/#", &a));
        assert!(!r.unsubscribe("x/#", &a));
        assert_eq!(names(&r, "x"), vec!["b"]);
    }

    #[test]
    fn shared_groups_round_robin() {
        let r = Router::default();
        let a = Session::new("a".into());
        let b = Session::new("b".into());
        r.subscribe("$share/g/t/+", sub(&a, QoS::AtLeastOnce, None));
        r.subscribe("$share/g/t/+", sub(&b, QoS::AtLeastOnce, None));
        let picks: Vec<String> = (0..4).flat_map(|_| names(&r, "t/1")).collect();
        assert_eq!(picks.iter().filter(|n| *n == "a").count(), 2);
        assert_eq!(picks.iter().filter(|n| *n == "b").count(), 2);
        assert!(r.unsubscribe("$share/g/t/+", &a));
        assert_eq!(names(&r, "t/1"), vec!["b"]);
    }
}
