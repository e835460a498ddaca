//! Validation of what callers send: names and descriptions, metadata,
//! amounts, low-balance thresholds, webhook URLs and event types, and the
//! hash API keys are kept as.
//!
//! Owns: the bounds (ARCHITECTURE.md, Bounds) and the error each breach
//! gives. May not: touch a store or the clock.

use crate::error::{Error, Result};
use crate::records::{EventType, Metadata};
use credstack_core::{Amount, AmountError, Scale};
use sha2::{Digest, Sha256};

/// Longest name-like text: names, units, emails, external ids.
pub const TEXT_SHORT_MAX: usize = 200;
/// Longest description.
pub const TEXT_LONG_MAX: usize = 1000;
pub const METADATA_KEYS_MAX: usize = 50;
pub const METADATA_KEY_MAX: usize = 40;
pub const METADATA_VALUE_MAX: usize = 500;

pub fn checked_text(param: &str, text: &str, max: usize) -> Result<String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(Error::invalid(param, "must not be empty"));
    }
    // PostgreSQL text cannot hold NUL; no name or description needs a
    // control character but tab and line breaks.
    if has_control_characters(trimmed) {
        return Err(Error::invalid(param, "must not contain control characters"));
    }
    if trimmed.chars().count() > max {
        return Err(Error::invalid(
            param,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(trimmed.to_string())
}

/// Whether `text` holds a control character other than tab, CR or LF.
pub fn has_control_characters(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
}

pub fn checked_opt_text(param: &str, text: Option<&str>) -> Result<Option<String>> {
    let max = if param == "description" {
        TEXT_LONG_MAX
    } else {
        TEXT_SHORT_MAX
    };
    text.map(|t| checked_text(param, t, max)).transpose()
}

pub fn checked_metadata(metadata: &Metadata) -> Result<Metadata> {
    if metadata.len() > METADATA_KEYS_MAX {
        return Err(Error::invalid(
            "metadata",
            format!("must have at most {METADATA_KEYS_MAX} keys"),
        ));
    }
    for (key, value) in metadata {
        if key.is_empty() || key.chars().count() > METADATA_KEY_MAX {
            return Err(Error::invalid(
                "metadata",
                format!("keys must be 1 to {METADATA_KEY_MAX} characters"),
            ));
        }
        if value.chars().count() > METADATA_VALUE_MAX {
            return Err(Error::invalid(
                "metadata",
                format!("values must be at most {METADATA_VALUE_MAX} characters"),
            ));
        }
    }
    Ok(metadata.clone())
}

/// A low-balance threshold: `None` for none, else a non-negative amount.
pub fn threshold(text: Option<&str>, scale: Scale) -> Result<Option<Amount>> {
    text.map(|text| {
        parse_amount(
            "low_balance_threshold",
            text,
            scale,
            Amount::parse_non_negative,
        )
    })
    .transpose()
}

pub fn parse_amount(
    param: &str,
    text: &str,
    scale: Scale,
    parse: fn(&str, Scale) -> std::result::Result<Amount, AmountError>,
) -> Result<Amount> {
    parse(text, scale).map_err(|e| Error::invalid(param, format!("{param} {}", e.message(scale))))
}

pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A webhook URL's longest length.
pub const URL_MAX: usize = 2048;

/// A webhook URL: absolute `http` or `https` with a host, no credentials.
pub fn checked_url(text: &str) -> Result<String> {
    let invalid = |message: &str| Error::invalid("url", message.to_string());
    if text.len() > URL_MAX {
        return Err(invalid("url must be at most 2048 characters"));
    }
    let url = url::Url::parse(text).map_err(|_| invalid("url must be an absolute URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("url must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("url must not carry credentials"));
    }
    Ok(text.to_string())
}

/// Event type names: at least one, each a known type or `*`, kept in the
/// order given without repeats.
pub fn checked_event_types(types: &[String]) -> Result<Vec<String>> {
    if types.is_empty() {
        return Err(Error::invalid(
            "event_types",
            "event_types must name at least one event type, or \"*\"",
        ));
    }
    let mut checked: Vec<String> = Vec::new();
    for name in types {
        if name != "*" && EventType::parse(name).is_none() {
            return Err(Error::invalid(
                "event_types",
                format!("unknown event type {name:?}"),
            ));
        }
        if !checked.contains(name) {
            checked.push(name.clone());
        }
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_event_types_are_checked() {
        assert!(checked_url("https://example.com/hooks").is_ok());
        assert!(checked_url("http://127.0.0.1:8080/x").is_ok());
        for bad in [
            "ftp://example.com",
            "/relative",
            "https://user:pw@example.com/",
            "nope",
        ] {
            assert!(checked_url(bad).is_err(), "{bad}");
        }
        let types =
            |names: &[&str]| -> Vec<String> { names.iter().map(|n| n.to_string()).collect() };
        assert_eq!(
            checked_event_types(&types(&["grant.created", "*", "grant.created"])).unwrap(),
            types(&["grant.created", "*"])
        );
        assert!(checked_event_types(&[]).is_err());
        assert!(checked_event_types(&types(&["grant.made"])).is_err());
    }
}
