//! Identifiers that cross a process boundary, as validated newtypes.
//!
//! Device ids appear inside MQTT topic names, so they must never contain a
//! level separator or a wildcard; validating once here keeps every topic the
//! hub builds well-formed and every ACL check exact.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest id accepted, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty string.
    #[error("{kind} id must not be empty")]
    Empty {
        /// What kind of id was being parsed.
        kind: &'static str,
    },
    /// Longer than [`MAX_ID_LEN`].
    #[error("{kind} id {id:?} is longer than {MAX_ID_LEN} bytes")]
    TooLong {
        /// What kind of id was being parsed.
        kind: &'static str,
        /// The offending id.
        id: String,
    },
    /// A character outside `[A-Za-z0-9._-]`.
    #[error("{kind} id {id:?} may only contain letters, digits, '.', '_' and '-'")]
    BadChar {
        /// What kind of id was being parsed.
        kind: &'static str,
        /// The offending id.
        id: String,
    },
}

fn check(kind: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            id: id.to_owned(),
        });
    }
    let ok = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !ok {
        return Err(IdError::BadChar {
            kind,
            id: id.to_owned(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        // Shared, so that the ingest path can hand an id around without
        // copying it.
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates and wraps an id.
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                check($kind, &id)?;
                Ok(Self(id.into()))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(id: String) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(id: &str) -> Result<Self, IdError> {
                Self::new(id)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A device (gateway or sensor node) registered with the hub; also its
    /// MQTT client id and username.
    DeviceId,
    "device"
);
id_type!(
    /// A site: a plant, a building, a line; devices belong to one site.
    SiteId,
    "site"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        assert_eq!(
            DeviceId::new("press-7.line_2").unwrap().as_str(),
            "press-7.line_2"
        );
    }

    #[test]
    fn refuses_topic_metacharacters() {
        for bad in ["a/b", "a+", "#", "a b", "", "é"] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(matches!(
            DeviceId::new("x".repeat(65)),
            Err(IdError::TooLong { .. })
        ));
    }

    #[test]
    fn serde_validates() {
        let ok: DeviceId = serde_json::from_str("\"dev-1\"").unwrap();
        assert_eq!(ok.to_string(), "dev-1");
        assert!(serde_json::from_str::<DeviceId>("\"dev/1\"").is_err());
    }
}
