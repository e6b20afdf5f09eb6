//! The mapped fields in a vCard (RFC 6350; 3.0 read too) with the `calcard` crate.
//! Cards are written as 4.0 (calcard's 3.0 writer mangles year-less birthdays), and a
//! card we update keeps every property we do not map (photo, birthday, notes, custom
//! X- properties): the sync never destroys what it does not own.

use calcard::vcard::{VCard, VCardEntry, VCardProperty, VCardValue, VCardVersion};

use super::ContactFields;

/// A parsed remote card.
#[derive(Debug, Clone)]
pub struct Card {
    pub uid: String,
    /// As written in the card (not canonical).
    pub fields: ContactFields,
    pub vcard: VCard,
}

/// Properties the sync owns; everything else in a card is left as it is.
const MAPPED: [VCardProperty; 8] = [
    VCardProperty::Fn,
    VCardProperty::N,
    VCardProperty::Org,
    VCardProperty::Email,
    VCardProperty::Tel,
    VCardProperty::Impp,
    VCardProperty::Adr,
    VCardProperty::Uid,
];

/// Parses a vCard; `None` when the text holds none.
pub fn parse(text: &str) -> Option<Card> {
    let vcard = VCard::parse(text).ok()?;
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
    let address = vcard
        .property(&VCardProperty::Adr)
        .map(|adr| {
            // pobox; extended; street; locality; region; postal code; country
            let parts: Vec<String> = adr.values.iter().map(|v| value_text(v).unwrap_or_default()).collect();
            [2, 3, 4, 5, 6].iter().map(|&i| parts.get(i).cloned().unwrap_or_default()).collect::<Vec<_>>().join(";")
        })
        .unwrap_or_default();
    let fields = ContactFields {
        name,
        organization,
        emails: texts(VCardProperty::Email).into_iter().map(|e| e.trim_start_matches("mailto:").to_string()).collect(),
        phones: texts(VCardProperty::Tel),
        ims: texts(VCardProperty::Impp),
        address,
    };
    Some(Card { uid: vcard.uid().unwrap_or_default().to_string(), fields, vcard })
}

fn value_text(value: &VCardValue) -> Option<String> {
    match value {
        VCardValue::Text(s) => Some(s.trim().to_string()),
        VCardValue::Component(parts) => Some(parts.join(",").trim().to_string()),
        other => other.as_text().map(|s| s.trim().to_string()),
    }
}

/// The card to write: `base`'s unmapped properties (if any), then `fields` and `uid`.
pub fn render(base: Option<&VCard>, uid: &str, fields: &ContactFields) -> String {
    let mut entries: Vec<VCardEntry> = base
        .map(|card| {
            card.entries
                .iter()
                .filter(|e| {
                    !MAPPED.contains(&e.name)
                        && !matches!(e.name, VCardProperty::Begin | VCardProperty::End | VCardProperty::Version)
                })
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let text = |prop: VCardProperty, value: &str| VCardEntry::new(prop).with_value(value.to_string());
    entries.push(text(VCardProperty::Uid, uid));
    let name =
        if fields.name.is_empty() { fields.emails.first().cloned().unwrap_or_default() } else { fields.name.clone() };
    entries.push(text(VCardProperty::Fn, &name));
    // N is required in 3.0 and expected by many clients.
    let (given, family) = fields.given_and_family();
    entries.push(
        VCardEntry::new(VCardProperty::N).with_values(
            [family, given, "", "", ""].into_iter().map(|part| VCardValue::Text(part.to_string())).collect(),
        ),
    );
    if !fields.organization.is_empty() {
        entries.push(text(VCardProperty::Org, &fields.organization));
    }
    entries.extend(fields.emails.iter().map(|e| text(VCardProperty::Email, e)));
    entries.extend(fields.phones.iter().map(|p| text(VCardProperty::Tel, p)));
    entries.extend(fields.ims.iter().map(|i| text(VCardProperty::Impp, i)));
    if !fields.address.is_empty() {
        let parts: Vec<&str> = fields.address.split(';').collect();
        let part = |i: usize| parts.get(i).copied().unwrap_or("").to_string();
        let values = [String::new(), String::new(), part(0), part(1), part(2), part(3), part(4)];
        entries
            .push(VCardEntry::new(VCardProperty::Adr).with_values(values.into_iter().map(VCardValue::Text).collect()));
    }
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = VCard { entries }.write_to(&mut out, VCardVersion::V4_0);
    out
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
        let text = render(Some(&card.vcard), &card.uid, &fields);
        assert!(text.starts_with("BEGIN:VCARD\r\nVERSION:4.0\r\n"), "{text}");
        for kept in ["NOTE:met at the fair", "X-CUSTOM:keep me", "BDAY:--0415"] {
            assert!(text.contains(kept), "{kept} lost:\n{text}");
        }
        let again = parse(&text).unwrap();
        assert_eq!(again.uid, "abc-1");
        assert_eq!(again.fields.canonical("US"), fields);
    }
}
