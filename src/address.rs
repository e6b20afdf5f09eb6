//! Email address and phone number normalization: the one place that decides what
//! "the same address" means, for matching, deduplication and the user's own addresses.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not {what}")]
pub struct AddressError {
    pub input: String,
    pub what: &'static str,
}

/// Normalizes an email address: trims, strips angle brackets, lower-cases, and writes an
/// internationalized domain in its ASCII (punycode) form, so `bücher.example` and
/// `xn--bcher-kva.example` are one domain. Rejects anything that is not `local@domain`
/// (one `@`, no spaces or specials, a valid domain).
pub fn normalize_email(input: &str) -> Result<String, AddressError> {
    let err = || AddressError { input: input.to_string(), what: "an email address" };
    let trimmed = input.trim();
    let inner = trimmed.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(trimmed).trim();
    let (local, domain) = inner.rsplit_once('@').ok_or_else(err)?;
    let valid_local = !local.is_empty()
        && local.len() <= 64
        && !local.chars().any(|c| c.is_whitespace() || c.is_control() || "<>(),;:@\"[]\\".contains(c));
    let plausible_domain = !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && domain.chars().all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if !valid_local || !plausible_domain {
        return Err(err());
    }
    let domain = idna::domain_to_ascii(domain).map_err(|_| err())?;
    let valid_labels =
        domain.split('.').all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'));
    if !valid_labels || domain.len() > 253 {
        return Err(err());
    }
    Ok(format!("{}@{}", local.to_lowercase(), domain))
}

/// An organization's optional address-equivalence rules, both off by default: with them
/// on, `ann+crm@x.com` matches `ann@x.com`, and `a.n.n@gmail.com` matches `ann@gmail.com`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchRules {
    #[serde(default)]
    pub ignore_plus_tags: bool,
    #[serde(default)]
    pub ignore_gmail_dots: bool,
}

/// The key two addresses must share to match under `rules`; `address` is normalized.
pub fn match_key(address: &str, rules: MatchRules) -> String {
    let Some((local, domain)) = address.rsplit_once('@') else { return address.to_string() };
    let mut local = local;
    if rules.ignore_plus_tags
        && let Some((base, _tag)) = local.split_once('+')
        && !base.is_empty()
    {
        local = base;
    }
    if rules.ignore_gmail_dots && matches!(domain, "gmail.com" | "googlemail.com") {
        let undotted: String = local.chars().filter(|&c| c != '.').collect();
        return format!("{undotted}@gmail.com");
    }
    format!("{local}@{domain}")
}

/// The domain of a normalized address.
pub fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
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
        for bad in ["", "ann", "@example.com", "ann@", "ann@@x", "a b@x.com", "ann@.x", "ann@x..y", "ann@-x-.com-"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn idn_domains_have_one_form() {
        let unicode = normalize_email("Jörg@Bücher.Example").unwrap();
        assert_eq!(unicode, "jörg@xn--bcher-kva.example");
        assert_eq!(normalize_email("jörg@XN--BCHER-KVA.example").unwrap(), unicode);
    }

    #[test]
    fn match_rules_are_off_by_default() {
        let off = MatchRules::default();
        assert_eq!(match_key("ann+crm@x.com", off), "ann+crm@x.com");
        assert_eq!(match_key("a.nn@gmail.com", off), "a.nn@gmail.com");
        let on = MatchRules { ignore_plus_tags: true, ignore_gmail_dots: true };
        assert_eq!(match_key("ann+crm@x.com", on), "ann@x.com");
        assert_eq!(match_key("+only@x.com", on), "+only@x.com");
        assert_eq!(match_key("a.n.n+x@googlemail.com", on), "ann@gmail.com");
        assert_eq!(match_key("a.nn@example.com", on), "a.nn@example.com");
    }

    #[test]
    fn phones() {
        assert_eq!(normalize_phone("+1 (555) 010-2030").unwrap(), "+15550102030");
        assert!(normalize_phone("call me").is_err());
        assert!(normalize_phone("123").is_err());
    }
}
