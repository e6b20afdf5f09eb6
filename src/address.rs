//! Email address and phone number normalization: the one place that decides what
//! "the same address" means, for matching, deduplication and the user's own addresses.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not {what}")]
pub struct AddressError {
    pub input: String,
    pub what: &'static str,
}

/// Normalizes an email address: trims, strips angle brackets, lower-cases.
/// Rejects anything that is not `local@domain` (one `@`, no spaces or specials).
pub fn normalize_email(input: &str) -> Result<String, AddressError> {
    let err = || AddressError { input: input.to_string(), what: "an email address" };
    let trimmed = input.trim();
    let inner = trimmed
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(trimmed)
        .trim();
    let (local, domain) = inner.rsplit_once('@').ok_or_else(err)?;
    let valid_local = !local.is_empty()
        && local.len() <= 64
        && !local.chars().any(|c| c.is_whitespace() || c.is_control() || "<>(),;:@\"[]\\".contains(c));
    let valid_domain = !domain.is_empty()
        && domain.len() <= 253
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if !valid_local || !valid_domain {
        return Err(err());
    }
    Ok(format!("{}@{}", local.to_lowercase(), domain.to_lowercase()))
}

/// Normalizes a phone number to `+` and digits. Rejects input with letters or with
/// fewer than 5 digits.
pub fn normalize_phone(input: &str) -> Result<String, AddressError> {
    let err = || AddressError { input: input.to_string(), what: "a phone number" };
    let trimmed = input.trim();
    if trimmed.chars().any(|c| !(c.is_ascii_digit() || " +-().".contains(c))) {
        return Err(err());
    }
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 5 || digits.len() > 15 {
        return Err(err());
    }
    Ok(if trimmed.starts_with('+') { format!("+{digits}") } else { digits })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email("  <Ann@Example.COM> ").unwrap(), "ann@example.com");
        assert_eq!(normalize_email("a.b+tag@sub.example.org").unwrap(), "a.b+tag@sub.example.org");
        for bad in ["", "ann", "@example.com", "ann@", "ann@@x", "a b@x.com", "ann@.x", "ann@x..y"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones() {
        assert_eq!(normalize_phone("+1 (555) 010-2030").unwrap(), "+15550102030");
        assert!(normalize_phone("call me").is_err());
        assert!(normalize_phone("123").is_err());
    }
}
