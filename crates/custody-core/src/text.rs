//! Validated text: names, reasons, e-mail addresses, carrier tracking references.
//!
//! Each is a newtype with a private field and one fallible constructor (STYLE.md rule 5). Text
//! that reaches logs, the audit log, CSV exports or HTML is free of control characters by
//! construction, which removes log injection at the source (ASVS 16.4.1); escaping for HTML and
//! CSV still happens at those edges.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a piece of text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// Empty, or only white space.
    #[error("{what} must not be empty")]
    Empty {
        /// What the text was for.
        what: &'static str,
    },
    /// Longer than the limit, in characters.
    #[error("{what} must be at most {max} characters")]
    TooLong {
        /// What the text was for.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// Contains a control character (newline, tab, escape…).
    #[error("{what} must not contain control characters")]
    ControlCharacter {
        /// What the text was for.
        what: &'static str,
    },
    /// Not of the required form.
    #[error("{what} is not valid: {hint}")]
    Invalid {
        /// What the text was for.
        what: &'static str,
        /// What a valid value looks like.
        hint: &'static str,
    },
}

/// Trims `s` and checks it is non-empty, at most `max` characters and free of control characters.
fn clean(what: &'static str, s: &str, max: usize) -> Result<String, TextError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(TextError::Empty { what });
    }
    if s.chars().count() > max {
        return Err(TextError::TooLong { what, max });
    }
    if s.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter { what });
    }
    Ok(s.to_owned())
}

macro_rules! text_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

text_type!(
    /// A display name: of an organisation, site, bank, carrier or person (1–100 characters).
    Name);
impl Name {
    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self, TextError> {
        clean("name", s, 100).map(Self)
    }
}

text_type!(
    /// Why a person did something sensitive (an opening, a role grant, a key, a lockdown, an
    /// export): 3–500 characters.
    ///
    /// Reasons are recorded in the audit log, so the auditor later reads why a door opened.
    Reason);
impl Reason {
    /// Parses a reason.
    pub fn parse(s: &str) -> Result<Self, TextError> {
        let s = clean("reason", s, 500)?;
        if s.chars().count() < 3 {
            return Err(TextError::Invalid { what: "reason", hint: "say why, in a few words" });
        }
        Ok(Self(s))
    }
}

text_type!(
    /// A carrier's tracking reference for a parcel: 1–64 printable ASCII characters.
    TrackingRef);
impl TrackingRef {
    /// Parses a tracking reference.
    pub fn parse(s: &str) -> Result<Self, TextError> {
        let s = clean("tracking reference", s, 64)?;
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TextError::Invalid {
                what: "tracking reference",
                hint: "letters, digits and punctuation without spaces",
            });
        }
        Ok(Self(s))
    }
}

text_type!(
    /// An e-mail address, lower-cased: the login name of a person and where codes are sent.
    ///
    /// Deliberately conservative: one `@`, a dot in the domain, no spaces or quotes, at most 254
    /// characters (RFC 5321). Odd-but-legal forms are refused rather than half-supported.
    Email);
impl Email {
    /// Parses an e-mail address.
    pub fn parse(s: &str) -> Result<Self, TextError> {
        const HINT: &str = "expected an address like name@example.org";
        let s = clean("e-mail address", s, 254)?.to_lowercase();
        let invalid = TextError::Invalid { what: "e-mail address", hint: HINT };
        let (local, domain) = s.split_once('@').ok_or_else(|| invalid.clone())?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && local
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if local_ok && domain_ok { Ok(Self(s)) } else { Err(invalid) }
    }
}

/// Percent-encodes everything but the unreserved characters of RFC 3986 §2.3, for a URI
/// component (a query value, a path segment, an `otpauth://` label).
pub fn percent_encode_component(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  Bank A ").unwrap().as_str(), "Bank A");
        assert!(matches!(Name::parse("   "), Err(TextError::Empty { .. })));
        assert!(matches!(Name::parse(&"x".repeat(101)), Err(TextError::TooLong { .. })));
        assert!(matches!(Name::parse("a\nb"), Err(TextError::ControlCharacter { .. })));
        assert!(matches!(Name::parse("a\u{1b}[31mb"), Err(TextError::ControlCharacter { .. })));
    }

    #[test]
    fn emails() {
        assert_eq!(Email::parse(" Ann@Example.ORG ").unwrap().as_str(), "ann@example.org");
        for bad in [
            "ann",
            "ann@",
            "@example.org",
            "ann@example",
            "a b@example.org",
            "ann@-x.org",
            "ann@@x.org",
            "\"a\"@x.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn reasons_need_words() {
        assert!(Reason::parse("ok").is_err());
        assert!(Reason::parse("resident locked out, verified ID at desk").is_ok());
    }

    #[test]
    fn tracking_refs() {
        assert!(TrackingRef::parse("1Z999AA10123456784").is_ok());
        assert!(TrackingRef::parse("1Z 999").is_err());
        assert!(TrackingRef::parse("é").is_err());
    }
}
