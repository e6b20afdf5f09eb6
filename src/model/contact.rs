//! A contact's fields as contacts sync carries them, in canonical form, and the sync's
//! direction and conflict policy: shared by the sync engine and the store.

use serde::{Deserialize, Serialize};

/// The fields a sync carries, in canonical form once [`ContactFields::canonical`] ran:
/// trimmed, emails lower-case, phones E.164 where they parse, lists sorted and deduplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactFields {
    pub name: String,
    pub organization: String,
    pub emails: Vec<String>,
    pub phones: Vec<String>,
    /// Instant-messenger URIs (`xmpp:ann@example.org`, `skype:ann`).
    pub ims: Vec<String>,
    /// One postal address: `street;locality;region;postal code;country`, or empty.
    pub address: String,
}

/// One of the merged fields, for conflict reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Name,
    Organization,
    Emails,
    Phones,
    Ims,
    Address,
}

/// Which side wins a field changed on both sides since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictPolicy {
    CrmWins,
    RemoteWins,
    /// Sell's rule: remote edits apply only to contacts that came from the remote (where
    /// the remote also wins conflicts); for contacts made in the CRM, the CRM's fields
    /// stand and are written back over remote edits.
    Origin,
}

/// Which way changes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    TwoWay,
    CrmToRemote,
    RemoteToCrm,
}

impl Direction {
    pub fn pushes(self) -> bool {
        self != Direction::RemoteToCrm
    }
    pub fn pulls(self) -> bool {
        self != Direction::CrmToRemote
    }
}

impl ContactFields {
    /// The canonical form; phone numbers without a country code are read in `region`
    /// (ISO 3166 code such as `US`).
    pub fn canonical(&self, region: &str) -> ContactFields {
        let mut emails: Vec<String> =
            self.emails.iter().map(|e| canonical_email(e)).filter(|e| !e.is_empty()).collect();
        let mut phones: Vec<String> = self.phones.iter().map(|p| e164(p, region)).filter(|p| !p.is_empty()).collect();
        let mut ims: Vec<String> = self.ims.iter().map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect();
        for list in [&mut emails, &mut phones, &mut ims] {
            list.sort();
            list.dedup();
        }
        let address = self.address.split(';').map(str::trim).collect::<Vec<_>>().join(";");
        ContactFields {
            name: self.name.trim().to_string(),
            organization: self.organization.trim().to_string(),
            emails,
            phones,
            ims,
            address: if address.chars().all(|c| c == ';') { String::new() } else { address },
        }
    }

    /// These (canonical) fields with each list in `preferred`'s order: the entries
    /// `preferred` has (compared canonically in `region`) first, as it orders them, then
    /// the others. So writing merged fields to a side keeps that side's primary email and
    /// phone (the first) instead of the alphabetically first one.
    pub fn ordered_like(&self, preferred: &ContactFields, region: &str) -> ContactFields {
        fn order(list: &[String], preferred: Vec<String>) -> Vec<String> {
            let mut out: Vec<String> = preferred.into_iter().filter(|p| list.contains(p)).collect();
            out.dedup();
            let rest: Vec<String> = list.iter().filter(|v| !out.contains(v)).cloned().collect();
            out.extend(rest);
            out
        }
        let emails = preferred.emails.iter().map(|e| canonical_email(e)).collect();
        let phones = preferred.phones.iter().map(|p| e164(p, region)).collect();
        let ims = preferred.ims.iter().map(|i| i.trim().to_string()).collect();
        ContactFields {
            emails: order(&self.emails, emails),
            phones: order(&self.phones, phones),
            ims: order(&self.ims, ims),
            ..self.clone()
        }
    }

    /// SHA-256 of the canonical JSON, hex: equal fields, equal hash.
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        hex::encode(ring::digest::digest(&ring::digest::SHA256, &json))
    }

    /// The name split for structured fields (vCard N, Google's names): the last word is
    /// the family name, the rest the given name.
    pub fn given_and_family(&self) -> (&str, &str) {
        self.name.rsplit_once(' ').unwrap_or(("", self.name.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        *self == ContactFields::default()
    }

    pub(crate) fn field_eq(&self, other: &ContactFields, field: Field) -> bool {
        match field {
            Field::Name => self.name == other.name,
            Field::Organization => self.organization == other.organization,
            Field::Emails => self.emails == other.emails,
            Field::Phones => self.phones == other.phones,
            Field::Ims => self.ims == other.ims,
            Field::Address => self.address == other.address,
        }
    }

    pub(crate) fn take_field(&mut self, from: &ContactFields, field: Field) {
        match field {
            Field::Name => self.name = from.name.clone(),
            Field::Organization => self.organization = from.organization.clone(),
            Field::Emails => self.emails = from.emails.clone(),
            Field::Phones => self.phones = from.phones.clone(),
            Field::Ims => self.ims = from.ims.clone(),
            Field::Address => self.address = from.address.clone(),
        }
    }
}

pub(crate) const FIELDS: [Field; 6] =
    [Field::Name, Field::Organization, Field::Emails, Field::Phones, Field::Ims, Field::Address];

/// An email address as the sync compares it: normalized, or (when it does not parse)
/// trimmed and lower-cased, so nothing is lost.
pub fn canonical_email(email: &str) -> String {
    crate::address::normalize_email(email).unwrap_or_else(|_| email.trim().to_lowercase())
}

/// Phone number in E.164 when it parses as a valid number (in `region` unless it has a
/// country code); otherwise its digits (with a leading `+` kept), so nothing is lost.
pub fn e164(input: &str, region: &str) -> String {
    let input = input.trim().trim_start_matches("tel:");
    let region = region.parse::<phonenumber::country::Id>().ok();
    match phonenumber::parse(region, input) {
        Ok(number) if phonenumber::is_valid(&number) => number.format().mode(phonenumber::Mode::E164).to_string(),
        _ => crate::address::normalize_phone(input).unwrap_or_else(|_| input.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_like_a_side_keeps_its_primary_entries_first() {
        let crm = ContactFields {
            emails: vec!["Zed@X.test".into(), "amy@x.test".into()],
            phones: vec!["(415) 555-0199".into()],
            ..Default::default()
        };
        let mut merged = crm.canonical("US");
        merged.emails.push("bea@x.test".into());
        merged.phones.insert(0, "+14155550100".into());
        let ordered = merged.ordered_like(&crm, "US");
        assert_eq!(ordered.emails, ["zed@x.test", "amy@x.test", "bea@x.test"]);
        assert_eq!(ordered.phones, ["+14155550199", "+14155550100"]);
        assert_eq!(ordered.canonical("US"), merged.canonical("US"), "the same fields, only in another order");
    }
}
