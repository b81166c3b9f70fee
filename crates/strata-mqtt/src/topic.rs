//! Topic names and topic filters: syntax validation, wildcard matching as
//! MQTT specifies it (section 4.7), and `$share/{group}/{filter}` parsing.

/// Why a topic name or filter is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topics and filters must be at least one character long.
    #[error("topic is empty")]
    Empty,
    /// Longer than the 65,535 bytes a UTF-8 string field can hold.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// U+0000 is forbidden in MQTT strings.
    #[error("topic contains the NUL character")]
    ContainsNul,
    /// More levels than [`MAX_LEVELS`].
    #[error("topic has more than {MAX_LEVELS} levels")]
    TooManyLevels,
    /// `+` or `#` in a topic name (they are only for filters).
    #[error("topic name {0:?} contains a wildcard ('+' or '#')")]
    WildcardInName(String),
    /// `#` not alone in the last level.
    #[error("topic filter {0:?}: '#' must be the whole last level")]
    BadMultiLevelWildcard(String),
    /// `+` not alone in its level.
    #[error("topic filter {0:?}: '+' must occupy a whole level")]
    BadSingleLevelWildcard(String),
    /// `$share/` without a valid group name and filter.
    #[error(
        "shared subscription {0:?} must be $share/<group>/<filter> with a group name free of '/', '+' and '#'"
    )]
    BadSharedSubscription(String),
}

/// The most levels a topic name or filter may have, as in Mosquitto.
/// MQTT sets no limit, but a broker keeps a node per filter level and
/// walks them one call deep per level: a 64 KiB filter of slashes alone
/// would be 65,535 levels.
pub const MAX_LEVELS: usize = 200;

fn common_checks(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > usize::from(u16::MAX) {
        return Err(TopicError::TooLong);
    }
    if s.bytes().filter(|&b| b == b'/').count() >= MAX_LEVELS {
        return Err(TopicError::TooManyLevels);
    }
    if s.contains('\0') {
        return Err(TopicError::ContainsNul);
    }
    Ok(())
}

/// Checks a topic name used in PUBLISH: non-empty, no wildcards, no NUL.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    common_checks(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName(topic.to_owned()));
    }
    Ok(())
}

/// Checks a topic filter used in SUBSCRIBE: `#` only as the whole last level,
/// `+` only as a whole level. A `$share/` prefix is checked as well.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    common_checks(filter)?;
    if let Some(shared) = parse_shared(filter)? {
        return validate_plain_filter(shared.filter);
    }
    validate_plain_filter(filter)
}

fn validate_plain_filter(filter: &str) -> Result<(), TopicError> {
    common_checks(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::BadMultiLevelWildcard(filter.to_owned()));
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::BadSingleLevelWildcard(filter.to_owned()));
        }
    }
    Ok(())
}

/// True if `filter` matches `topic`. Both are assumed valid. Topics starting
/// with `$` are not matched by a filter starting with a wildcard.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// A parsed `$share/{group}/{filter}` subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedFilter<'a> {
    /// Share group name.
    pub group: &'a str,
    /// The topic filter messages are matched against.
    pub filter: &'a str,
}

/// Splits a shared subscription into group and filter. `Ok(None)` for a
/// filter that does not start with `$share/`.
pub fn parse_shared(filter: &str) -> Result<Option<SharedFilter<'_>>, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(None);
    };
    let bad = || TopicError::BadSharedSubscription(filter.to_owned());
    let (group, inner) = rest.split_once('/').ok_or_else(bad)?;
    if group.is_empty() || group.contains(['+', '#']) || inner.is_empty() {
        return Err(bad());
    }
    Ok(Some(SharedFilter {
        group,
        filter: inner,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_topic_name("a/b/c").is_ok());
        assert!(validate_topic_name("/").is_ok());
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert!(validate_topic_name("a/+").is_err());
        assert!(validate_topic_name("a/#").is_err());
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::ContainsNul));
        assert_eq!(
            validate_topic_name(&"x".repeat(70_000)),
            Err(TopicError::TooLong)
        );
        let levels = |n: usize| vec!["l"; n].join("/");
        assert!(validate_topic_name(&levels(MAX_LEVELS)).is_ok());
        assert_eq!(
            validate_topic_name(&levels(MAX_LEVELS + 1)),
            Err(TopicError::TooManyLevels)
        );
        assert_eq!(
            validate_topic_filter(&format!("a/{}#", "/".repeat(60_000))),
            Err(TopicError::TooManyLevels)
        );
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "a/+/c",
            "$share/g/a/#",
            "a//b",
        ] {
            assert!(validate_topic_filter(ok).is_ok(), "{ok}");
        }
        for bad in [
            "a/#/b",
            "a#",
            "a/b#",
            "a+",
            "a/+b",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "",
        ] {
            assert!(validate_topic_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_the_spec_examples() {
        let yes = [
            ("sport/tennis/player1/#", "sport/tennis/player1"),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
            ),
            ("sport/#", "sport"),
            ("#", "a/b"),
            ("sport/tennis/+", "sport/tennis/player1"),
            ("sport/+", "sport/"),
            ("+/+", "/finance"),
            ("/+", "/finance"),
            ("$SYS/#", "$SYS/x"),
            ("$SYS/+/x", "$SYS/a/x"),
            ("a/b", "a/b"),
        ];
        for (f, t) in yes {
            assert!(topic_matches(f, t), "{f} should match {t}");
        }
        let no = [
            ("sport/tennis/+", "sport/tennis/player1/ranking"),
            ("sport/+", "sport"),
            ("+", "/finance"),
            ("#", "$SYS/x"),
            ("+/monitor/Clients", "$SYS/monitor/Clients"),
            ("a/b", "a/b/c"),
            ("a/b/c", "a/b"),
            ("a/b", "A/b"),
        ];
        for (f, t) in no {
            assert!(!topic_matches(f, t), "{f} should not match {t}");
        }
    }

    #[test]
    fn shared() {
        assert_eq!(
            parse_shared("$share/grp/a/+/c"),
            Ok(Some(SharedFilter {
                group: "grp",
                filter: "a/+/c"
            }))
        );
        assert_eq!(parse_shared("a/b"), Ok(None));
        assert!(parse_shared("$share/grp").is_err());
        assert!(parse_shared("$share/#/a").is_err());
    }
}
