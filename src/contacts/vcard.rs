//! The mapped fields in a vCard (RFC 6350; 3.0 read too) with the `calcard` crate.
//! Cards are written as 4.0 (calcard's 3.0 writer mangles year-less birthdays). A card we
//! update changes only where a mapped field changed: every property we do not map
//! (photo, birthday, notes, custom X- properties) and every mapped one whose value stays
//! (with its TYPE/PREF parameters, group and place) is written back as it was.

use calcard::vcard::{VCard, VCardEntry, VCardProperty, VCardValue, VCardVersion};

use super::ContactFields;
use crate::model::contact::{canonical_email, e164};

/// A parsed remote card.
#[derive(Debug, Clone)]
pub struct Card {
    pub uid: String,
    /// As written in the card (not canonical).
    pub fields: ContactFields,
    pub vcard: VCard,
}

/// Parses a vCard; `None` when the text holds none.
pub fn parse(text: &str) -> Option<Card> {
    let vcard = VCard::parse(text).ok()?;
    Some(Card { uid: vcard.uid().unwrap_or_default().to_string(), fields: fields_of(&vcard), vcard })
}

/// The mapped fields as a card writes them (not canonical).
fn fields_of(vcard: &VCard) -> ContactFields {
    let texts = |prop: VCardProperty| -> Vec<String> {
        vcard
            .properties(&prop)
            .filter_map(|e| e.values.first().and_then(value_text))
            .filter(|v| !v.is_empty())
            .collect()
    };
    let mut name = texts(VCardProperty::Fn).into_iter().next().unwrap_or_default();
    if name.is_empty() {
        // No FN (allowed in 3.0 readers' practice): given and family name from N.
        if let Some(n) = vcard.property(&VCardProperty::N) {
            let parts: Vec<String> = n.values.iter().filter_map(value_text).collect();
            let (family, given) =
                (parts.first().cloned().unwrap_or_default(), parts.get(1).cloned().unwrap_or_default());
            name = format!("{given} {family}").trim().to_string();
        }
    }
    let organization =
        vcard.property(&VCardProperty::Org).and_then(|e| e.values.first()).and_then(value_text).unwrap_or_default();
    let address = vcard.property(&VCardProperty::Adr).map(adr_text).unwrap_or_default();
    ContactFields {
        name,
        organization,
        emails: texts(VCardProperty::Email).into_iter().map(|e| e.trim_start_matches("mailto:").to_string()).collect(),
        phones: texts(VCardProperty::Tel),
        ims: texts(VCardProperty::Impp),
        address,
    }
}

/// An ADR as the one mapped address: `street;locality;region;postal code;country`
/// (ADR's components are pobox; extended; street; locality; region; postal code; country).
fn adr_text(adr: &VCardEntry) -> String {
    let parts: Vec<String> = adr.values.iter().map(|v| value_text(v).unwrap_or_default()).collect();
    [2, 3, 4, 5, 6].iter().map(|&i| parts.get(i).cloned().unwrap_or_default()).collect::<Vec<_>>().join(";")
}

fn value_text(value: &VCardValue) -> Option<String> {
    match value {
        VCardValue::Text(s) => Some(s.trim().to_string()),
        VCardValue::Component(parts) => Some(parts.join(",").trim().to_string()),
        other => other.as_text().map(|s| s.trim().to_string()),
    }
}

/// The card to write for `fields` (canonical, phones in E.164 read in `region`). A new
/// card (`base` None) holds just the mapped fields. An update changes `base` in place and
/// only where a field changed: a field whose canonical value is the same is left exactly
/// as the card has it (parameters such as TYPE and PREF, groups, extra N and ORG
/// components, further addresses, order), and in a changed list the entries that remain
/// keep theirs; entries the list lost are removed, new ones follow the last of their kind.
/// Unmapped properties are never touched.
pub fn render(base: Option<&VCard>, uid: &str, fields: &ContactFields, region: &str) -> String {
    let entries = match base {
        Some(card) => updated(card, uid, fields, region),
        None => new_entries(uid, fields),
    };
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = VCard { entries }.write_to(&mut out, VCardVersion::V4_0);
    out
}

fn text_entry(prop: VCardProperty, value: &str) -> VCardEntry {
    VCardEntry::new(prop).with_value(value.to_string())
}

/// FN, falling back to the primary email when the contact has no name.
fn display_name(fields: &ContactFields) -> String {
    if fields.name.is_empty() { fields.emails.first().cloned().unwrap_or_default() } else { fields.name.clone() }
}

fn n_entry(fields: &ContactFields) -> VCardEntry {
    let (given, family) = fields.given_and_family();
    VCardEntry::new(VCardProperty::N)
        .with_values([family, given, "", "", ""].into_iter().map(|part| VCardValue::Text(part.to_string())).collect())
}

fn adr_entry(address: &str) -> VCardEntry {
    let mut entry = VCardEntry::new(VCardProperty::Adr).with_values(vec![VCardValue::Text(String::new()); 7]);
    set_adr(&mut entry, address);
    entry
}

/// Sets an ADR's street..country components from the mapped address, keeping the rest.
fn set_adr(entry: &mut VCardEntry, address: &str) {
    if entry.values.len() < 7 {
        entry.values.resize(7, VCardValue::Text(String::new()));
    }
    for (i, part) in address.split(';').take(5).enumerate() {
        entry.values[i + 2] = VCardValue::Text(part.to_string());
    }
}

fn new_entries(uid: &str, fields: &ContactFields) -> Vec<VCardEntry> {
    let mut entries = vec![text_entry(VCardProperty::Uid, uid), text_entry(VCardProperty::Fn, &display_name(fields))];
    // N is required in 3.0 and expected by many clients.
    entries.push(n_entry(fields));
    if !fields.organization.is_empty() {
        entries.push(text_entry(VCardProperty::Org, &fields.organization));
    }
    entries.extend(fields.emails.iter().map(|e| text_entry(VCardProperty::Email, e)));
    entries.extend(fields.phones.iter().map(|p| text_entry(VCardProperty::Tel, p)));
    entries.extend(fields.ims.iter().map(|i| text_entry(VCardProperty::Impp, i)));
    if !fields.address.is_empty() {
        entries.push(adr_entry(&fields.address));
    }
    entries
}

fn updated(card: &VCard, uid: &str, fields: &ContactFields, region: &str) -> Vec<VCardEntry> {
    let old = fields_of(card).canonical(region);
    let mut entries: Vec<VCardEntry> = card
        .entries
        .iter()
        .filter(|e| !matches!(e.name, VCardProperty::Begin | VCardProperty::End | VCardProperty::Version))
        .cloned()
        .collect();
    if card.uid() != Some(uid) {
        entries.retain(|e| e.name != VCardProperty::Uid);
        entries.insert(0, text_entry(VCardProperty::Uid, uid));
    }
    if old.name != fields.name {
        match entries.iter_mut().find(|e| e.name == VCardProperty::Fn) {
            Some(fn_entry) => fn_entry.values = vec![VCardValue::Text(display_name(fields))],
            None => entries.push(text_entry(VCardProperty::Fn, &display_name(fields))),
        }
        let (given, family) = fields.given_and_family();
        match entries.iter_mut().find(|e| e.name == VCardProperty::N) {
            Some(n) => {
                if n.values.len() < 5 {
                    n.values.resize(5, VCardValue::Text(String::new()));
                }
                n.values[0] = VCardValue::Text(family.to_string());
                n.values[1] = VCardValue::Text(given.to_string());
            }
            None => entries.push(n_entry(fields)),
        }
    }
    if old.organization != fields.organization {
        let at = entries.iter().position(|e| e.name == VCardProperty::Org);
        match (at, fields.organization.is_empty()) {
            (Some(at), true) => {
                entries.remove(at);
            }
            // The organization's name is the first component; units after it stay.
            (Some(at), false) => match entries[at].values.first_mut() {
                Some(first) => *first = VCardValue::Text(fields.organization.clone()),
                None => entries[at].values = vec![VCardValue::Text(fields.organization.clone())],
            },
            (None, false) => entries.push(text_entry(VCardProperty::Org, &fields.organization)),
            (None, true) => {}
        }
    }
    if old.emails != fields.emails {
        let key = |v: &str| canonical_email(v.trim().trim_start_matches("mailto:"));
        update_list(&mut entries, VCardProperty::Email, &fields.emails, key);
    }
    if old.phones != fields.phones {
        update_list(&mut entries, VCardProperty::Tel, &fields.phones, |v| e164(v, region));
    }
    if old.ims != fields.ims {
        update_list(&mut entries, VCardProperty::Impp, &fields.ims, |v| v.trim().to_string());
    }
    if old.address != fields.address {
        let at = entries.iter().position(|e| e.name == VCardProperty::Adr);
        match (at, fields.address.is_empty()) {
            (Some(at), true) => {
                entries.remove(at);
            }
            (Some(at), false) => set_adr(&mut entries[at], &fields.address),
            (None, false) => entries.push(adr_entry(&fields.address)),
            (None, true) => {}
        }
    }
    entries
}

/// Makes the entries of `prop` hold exactly `wanted` (compared by `key`): the entries
/// still wanted stay as they are, with their parameters and places; the others go; new
/// values follow the last entry of `prop`.
fn update_list(entries: &mut Vec<VCardEntry>, prop: VCardProperty, wanted: &[String], key: impl Fn(&str) -> String) {
    let wanted_keys: Vec<String> = wanted.iter().map(|w| key(w)).collect();
    let entry_key = |e: &VCardEntry| e.values.first().and_then(value_text).map(|v| key(&v));
    entries.retain(|e| e.name != prop || entry_key(e).is_some_and(|k| wanted_keys.contains(&k)));
    let kept: Vec<String> = entries.iter().filter(|e| e.name == prop).filter_map(entry_key).collect();
    let fresh: Vec<VCardEntry> = wanted
        .iter()
        .zip(&wanted_keys)
        .filter(|(_, k)| !kept.contains(k))
        .map(|(value, _)| text_entry(prop.clone(), value))
        .collect();
    let at = entries.iter().rposition(|e| e.name == prop).map_or(entries.len(), |i| i + 1);
    entries.splice(at..at, fresh);
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD_30: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:abc-1\r\nFN:Ann Lee\r\nN:Lee;Ann;;;\r\n\
        ORG:Acme\\, Inc.;Sales\r\nEMAIL;TYPE=work:ann@acme.example\r\nTEL;TYPE=cell:+1 415 555 0132\r\n\
        IMPP:xmpp:ann@chat.example\r\nADR;TYPE=work:;;1 Main St;Springfield;IL;62701;USA\r\n\
        BDAY:--0415\r\nNOTE:met at the fair\r\nX-CUSTOM:keep me\r\nEND:VCARD\r\n";

    #[test]
    fn reads_the_mapped_fields() {
        let card = parse(CARD_30).unwrap();
        assert_eq!(card.uid, "abc-1");
        let f = card.fields;
        assert_eq!((f.name.as_str(), f.organization.as_str()), ("Ann Lee", "Acme, Inc."));
        assert_eq!(f.emails, ["ann@acme.example"]);
        assert_eq!(f.phones, ["+1 415 555 0132"]);
        assert_eq!(f.ims, ["xmpp:ann@chat.example"]);
        assert_eq!(f.address, "1 Main St;Springfield;IL;62701;USA");
    }

    #[test]
    fn rendering_keeps_unmapped_properties_and_round_trips() {
        let card = parse(CARD_30).unwrap();
        let mut fields = card.fields.canonical("US");
        fields.name = "Ann Smith".into();
        let text = render(Some(&card.vcard), &card.uid, &fields, "US");
        assert!(text.starts_with("BEGIN:VCARD\r\nVERSION:4.0\r\n"), "{text}");
        for kept in ["NOTE:met at the fair", "X-CUSTOM:keep me", "BDAY:--0415"] {
            assert!(text.contains(kept), "{kept} lost:\n{text}");
        }
        let again = parse(&text).unwrap();
        assert_eq!(again.uid, "abc-1");
        assert_eq!(again.fields.canonical("US"), fields);
    }

    /// A card as a phone or a desktop client writes it: parameters, a group, several
    /// addresses, N and ORG with all their components.
    const RICH: &str = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:r-1\r\nFN:Ann Lee\r\nN:Lee;Ann;Marie;Dr.;PhD\r\n\
        ORG:Acme;Sales;West\r\nitem1.EMAIL;TYPE=work;PREF=1:ann@acme.example\r\n\
        item1.X-ABLABEL:office\r\nEMAIL;TYPE=home:ann@home.example\r\nTEL;TYPE=cell;PREF=1:+14155550132\r\n\
        TEL;TYPE=work:+14155550199\r\nADR;TYPE=work;LABEL=\"1 Main St\":;;1 Main St;Springfield;IL;62701;USA\r\n\
        ADR;TYPE=home:;;2 Elm St;Shelbyville;IL;62565;USA\r\nNOTE:met at the fair\r\nEND:VCARD\r\n";

    fn entries(text: &str) -> Vec<VCardEntry> {
        VCard::parse(text)
            .unwrap()
            .entries
            .into_iter()
            .filter(|e| !matches!(e.name, VCardProperty::Begin | VCardProperty::End | VCardProperty::Version))
            .collect()
    }

    /// Renders `RICH` with its fields changed by `change`.
    fn round_trip(change: impl FnOnce(&mut ContactFields)) -> (Vec<VCardEntry>, Vec<VCardEntry>) {
        let card = parse(RICH).unwrap();
        let mut fields = card.fields.canonical("US");
        change(&mut fields);
        let fields = fields.canonical("US");
        let text = render(Some(&card.vcard), &card.uid, &fields, "US");
        assert_eq!(parse(&text).unwrap().fields.canonical("US"), fields, "{text}");
        (entries(RICH), entries(&text))
    }

    #[test]
    fn an_unchanged_card_is_written_back_as_it_was() {
        let (before, after) = round_trip(|_| {});
        assert_eq!(before, after);
    }

    #[test]
    fn a_new_phone_is_added_after_the_others_and_nothing_else_changes() {
        let (before, after) = round_trip(|f| f.phones.push("+14155550100".into()));
        let mut expected = before.clone();
        let last_tel = expected.iter().rposition(|e| e.name == VCardProperty::Tel).unwrap();
        expected.insert(last_tel + 1, text_entry(VCardProperty::Tel, "+14155550100"));
        assert_eq!(after, expected);
    }

    #[test]
    fn a_removed_email_goes_and_the_remaining_one_keeps_its_group_and_parameters() {
        let (before, after) = round_trip(|f| f.emails.retain(|e| e != "ann@home.example"));
        let expected: Vec<VCardEntry> = before
            .into_iter()
            .filter(|e| !(e.name == VCardProperty::Email && e.params.iter().any(|p| format!("{p:?}").contains("Home"))))
            .collect();
        assert_eq!(after, expected);
        assert!(after.iter().any(|e| e.name == VCardProperty::Email && e.group.as_deref() == Some("item1")));
    }

    #[test]
    fn a_new_name_changes_fn_and_the_name_parts_only() {
        let (before, after) = round_trip(|f| f.name = "Ann Smith".into());
        assert_eq!(before.len(), after.len());
        for (b, a) in before.iter().zip(&after) {
            match b.name {
                VCardProperty::Fn => assert_eq!(a.values, vec![VCardValue::Text("Ann Smith".into())]),
                VCardProperty::N => {
                    let parts: Vec<String> = a.values.iter().filter_map(value_text).collect();
                    assert_eq!(parts, ["Smith", "Ann", "Marie", "Dr.", "PhD"]);
                    assert_eq!(a.params, b.params);
                }
                _ => assert_eq!(a, b),
            }
        }
    }

    #[test]
    fn a_new_address_changes_the_first_address_only_and_keeps_its_parameters() {
        let (before, after) = round_trip(|f| f.address = "9 Oak Ave;Springfield;IL;62702;USA".into());
        let changed: Vec<(&VCardEntry, &VCardEntry)> = before.iter().zip(&after).filter(|(b, a)| b != a).collect();
        assert_eq!(changed.len(), 1, "{changed:?}");
        let (b, a) = changed[0];
        assert_eq!((a.name.clone(), &a.params), (VCardProperty::Adr, &b.params));
        assert_eq!(adr_text(a), "9 Oak Ave;Springfield;IL;62702;USA");
    }

    #[test]
    fn organization_units_stay_when_the_name_of_the_organization_changes() {
        let (_, after) = round_trip(|f| f.organization = "Acme Holdings".into());
        let org = after.iter().find(|e| e.name == VCardProperty::Org).unwrap();
        let parts: Vec<String> = org.values.iter().filter_map(value_text).collect();
        assert_eq!(parts, ["Acme Holdings", "Sales", "West"]);
    }
}
