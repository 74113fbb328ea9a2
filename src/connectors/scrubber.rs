//! The one identity scrubber: every form in which a processor may echo the
//! subject's identities is replaced by the masked form before processor text
//! (an error body, a message) is stored, logged or reported.
//!
//! Processors do not echo an identity the way we sent it: an email comes back
//! upper-cased, percent-encoded (`jane%40example.com`), form-encoded, JSON-escaped
//! (`jane\u0040example.com`); a phone in the processor's own format
//! (`+44 7700 900123`, `07700 900123`, `447700900123`, `%2B447700900123`).
//! A [`Scrubber`] is built once per subject (its patterns are compiled then)
//! and applied to any number of texts; [`scrub`] is the one-off form.
//!
//! What counts as the same identity:
//! - email, customer id, name: every character may come literally (any case),
//!   percent-encoded (also twice, `%2540`), as a JSON `\uXXXX` escape or an HTML
//!   character reference; a space in a name also as `+` or `%20`. A match that
//!   continues into a longer address, id or word (`xjane@example.com`,
//!   `jane@example.com.evil.org`, `cus_1234` for `cus_123`) is another
//!   person's and is left alone.
//! - phone: the digits of the number with any separators (spaces, `-`, `.`,
//!   `/`, brackets, `+`, their percent-encodings) between them, with or
//!   without `+`/`00` and the country code, with or without the trunk `0`
//!   (`(0)`), and the national number alone when it has at least 7 digits.
//!   A digit run that continues before or after is another number.

use crate::domain::Subject;
use regex::Regex;
use std::fmt::Write as _;

/// The fewest digits a national number must have to be masked on its own,
/// without a country code or trunk prefix (shorter ones match too much).
const MIN_BARE_NATIONAL: usize = 7;

/// Where a match must stop for it to be the subject's and not a longer value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Edge {
    /// An email address: no address character before, no domain character after.
    Email,
    /// A phone number: no digit before or after.
    Digits,
    /// A customer id or a name: no letter or digit on either side (checked
    /// only on a side where the value itself ends in a letter or digit).
    Word { start: bool, end: bool },
}

#[derive(Debug, Clone)]
struct Rule {
    re: Regex,
    masked: String,
    edge: Edge,
}

/// The compiled forms of one subject's identities. Build it once per subject
/// ([`Scrubber::new`]) and call [`Scrubber::scrub`] on every processor text.
#[derive(Debug, Clone)]
pub struct Scrubber {
    rules: Vec<Rule>,
}

/// Replace every form of every identity of `subject` that occurs in `text` by
/// its masked form. Compiles the subject's patterns: where many texts are
/// scrubbed for one subject, build a [`Scrubber`] once instead.
pub fn scrub(text: &str, subject: &Subject) -> String {
    Scrubber::new(subject).scrub(text)
}

impl Scrubber {
    /// Compile the patterns of `subject`'s email, phone, customer id and name.
    pub fn new(subject: &Subject) -> Scrubber {
        let mut rules = Vec::new();
        if let Some(e) = &subject.email {
            push(
                &mut rules,
                &spelled(e.expose()),
                e.expose(),
                e.masked(),
                Edge::Email,
            );
        }
        if let Some(p) = &subject.phone {
            push(
                &mut rules,
                &phone_pattern(p.country_code(), p.national()),
                p.expose(),
                p.masked(),
                Edge::Digits,
            );
        }
        if let Some(c) = &subject.customer_id {
            let raw = c.expose();
            push(&mut rules, &spelled(raw), raw, c.masked(), word_edge(raw));
        }
        if let Some(n) = &subject.name {
            let raw = n.expose();
            push(&mut rules, &spelled(raw), raw, n.masked(), word_edge(raw));
        }
        Scrubber { rules }
    }

    /// `text` with every occurrence of the subject's identities, in any of the
    /// forms above, replaced by the identity's masked form. Other text is unchanged.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for rule in &self.rules {
            out = rule.apply(&out);
        }
        out
    }

    /// Scrub every string (keys too) inside a JSON value.
    pub fn scrub_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => *s = self.scrub(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.scrub_json(&mut v);
                    map.insert(self.scrub(&k), v);
                }
            }
            _ => {}
        }
    }
}

fn push(rules: &mut Vec<Rule>, pattern: &str, raw: &str, masked: String, edge: Edge) {
    // The patterns are built from escaped literals and always compile; should
    // one not, the identity is still masked in its raw form, never left out.
    let re = Regex::new(pattern).or_else(|_| Regex::new(&format!("(?i){}", regex::escape(raw))));
    if let Ok(re) = re {
        rules.push(Rule { re, masked, edge });
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn word_edge(raw: &str) -> Edge {
    Edge::Word {
        start: raw.chars().next().is_some_and(is_word),
        end: raw.chars().last().is_some_and(is_word),
    }
}

impl Rule {
    fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut from = 0;
        while from <= text.len() {
            let Some(m) = self.re.find_at(text, from) else {
                break;
            };
            if self.edge_ok(text, m.start(), m.end()) {
                out.push_str(&text[copied..m.start()]);
                out.push_str(&self.masked);
                copied = m.end();
                from = m.end();
            } else {
                // Another person's longer value: look again one character further.
                from = m.start() + text[m.start()..].chars().next().map_or(1, char::len_utf8);
            }
        }
        out.push_str(&text[copied..]);
        out
    }

    fn edge_ok(&self, text: &str, start: usize, end: usize) -> bool {
        let before = char_before(text, start);
        let after = char_after(text, end);
        match self.edge {
            Edge::Email => {
                let continues_local =
                    |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
                let continues_domain = match after {
                    Some((c, _)) if c.is_alphanumeric() || c == '-' || c == '_' => true,
                    Some(('.', next)) => {
                        char_after(text, next).is_some_and(|(c, _)| c.is_alphanumeric())
                    }
                    _ => false,
                };
                !before.is_some_and(continues_local) && !continues_domain
            }
            Edge::Digits => {
                !text[..start].ends_with(|c: char| c.is_ascii_digit())
                    && !text[end..].starts_with(|c: char| c.is_ascii_digit())
            }
            Edge::Word { start: s, end: e } => {
                !(s && before.is_some_and(is_word) || e && after.is_some_and(|(c, _)| is_word(c)))
            }
        }
    }
}

/// The character before byte `i`, decoding a `%HH` or `\uHHHH` escape that ends there.
fn char_before(text: &str, i: usize) -> Option<char> {
    let head = &text[..i];
    let b = head.as_bytes();
    if b.len() >= 3 && b[b.len() - 3] == b'%' {
        if let Some(c) = hex_char(&head[head.len() - 2..]) {
            return Some(c);
        }
    }
    if b.len() >= 6 && &b[b.len() - 6..b.len() - 4] == b"\\u" {
        if let Some(c) = hex_char(&head[head.len() - 4..]) {
            return Some(c);
        }
    }
    head.chars().next_back()
}

/// The character at byte `i` (decoding a `%HH` or `\uHHHH` escape), and the byte after it.
fn char_after(text: &str, i: usize) -> Option<(char, usize)> {
    let tail = &text[i..];
    if let Some(hex) = tail.strip_prefix('%').and_then(|t| t.get(..2)) {
        if let Some(c) = hex_char(hex) {
            return Some((c, i + 3));
        }
    }
    if let Some(hex) = tail.strip_prefix("\\u").and_then(|t| t.get(..4)) {
        if let Some(c) = hex_char(hex) {
            return Some((c, i + 6));
        }
    }
    tail.chars().next().map(|c| (c, i + c.len_utf8()))
}

fn hex_char(hex: &str) -> Option<char> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
}

/// A case-insensitive pattern matching `raw` with each character in any of its
/// encoded forms (see the module docs).
fn spelled(raw: &str) -> String {
    let mut p = String::from("(?i)");
    for c in raw.chars() {
        p.push_str("(?:");
        p.push_str(&char_forms(c).join("|"));
        p.push(')');
    }
    p
}

/// The forms of one character: itself, percent-encoded (once or twice), a JSON
/// escape, an HTML character reference; a space also as `+` and runs of whitespace.
fn char_forms(c: char) -> Vec<String> {
    let mut forms = vec![];
    let mut variants: Vec<char> = vec![c];
    variants.extend(c.to_lowercase());
    variants.extend(c.to_uppercase());
    variants.sort_unstable();
    variants.dedup();
    if c == ' ' {
        forms.push(r"\s+".to_string());
        forms.push(r"\+".to_string());
    } else {
        forms.push(regex::escape(&c.to_string()));
    }
    for v in variants {
        let mut buf = [0u8; 4];
        let bytes = v.encode_utf8(&mut buf).as_bytes();
        let mut once = String::new();
        let mut twice = String::new();
        for b in bytes {
            let _ = write!(once, "%{b:02X}");
            let _ = write!(twice, "%25{b:02X}");
        }
        forms.push(once);
        forms.push(twice);
        let mut units = [0u16; 2];
        let json: String = v
            .encode_utf16(&mut units)
            .iter()
            .map(|u| format!(r"\\u{u:04X}"))
            .collect();
        forms.push(json);
        let n = v as u32;
        forms.push(format!("&#{n};"));
        forms.push(format!("&#x0*{n:X};"));
    }
    forms.dedup();
    forms
}

/// Separators a processor may put between the digits of a phone number.
const SEP: &str = r"(?:[\s\-./()+]|%2[0bBdD89]|%252[0bBdD]|\\u00(?:2[0bBdD89])|\\u00A0)*";

/// The pattern of a phone number with country code `cc` and national number `nsn`.
fn phone_pattern(cc: &str, nsn: &str) -> String {
    let join = |digits: &str| -> String {
        digits
            .chars()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(SEP)
    };
    let plus = r"(?:\+|%2[bB]|%252[bB]|\\u002[bB]|00)";
    let international = format!("(?:{plus}{SEP})?{cc}{SEP}(?:0{SEP})?");
    let national = join(nsn);
    if nsn.len() >= MIN_BARE_NATIONAL {
        format!(r"(?:{international}|\(?0{SEP})?{national}")
    } else {
        format!(r"(?:{international}|\(?0{SEP}){national}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn jane() -> Subject {
        Subject::parse(
            Some("jane.doe+news@example.com"),
            Some("+44 7700 900123"),
            Some("cus_123"),
            Some("Jane Doe"),
        )
        .unwrap()
    }

    const EMAIL_MASK: &str = "j***@example.com";
    const PHONE_MASK: &str = "+44********23";

    #[test]
    fn every_encoding_of_the_email_is_masked() {
        let s = Scrubber::new(&jane());
        for form in [
            "jane.doe+news@example.com",
            "JANE.DOE+NEWS@EXAMPLE.COM",
            "jane.doe%2Bnews%40example.com",
            "JANE.DOE%2BNEWS%40EXAMPLE.COM",
            "jane.doe%2bnews%40example.com",
            "jane.doe%252Bnews%2540example.com",
            r"jane.doe+news\u0040example.com",
            r"jane.doe\u002bnews\u0040example.com",
            "jane.doe+news&#64;example.com",
            "%6A%61%6E%65.doe+news@example.com",
        ] {
            let text = format!("member \"{form}\" already exists");
            assert_eq!(
                s.scrub(&text),
                format!("member \"{EMAIL_MASK}\" already exists"),
                "{form}"
            );
        }
        let url = "GET /lists/1/members?email=jane.doe%2Bnews%40example.com&x=1";
        assert_eq!(
            s.scrub(url),
            format!("GET /lists/1/members?email={EMAIL_MASK}&x=1")
        );
    }

    #[test]
    fn every_format_of_the_phone_is_masked() {
        let s = Scrubber::new(&jane());
        for form in [
            "+447700900123",
            "+44 7700 900123",
            "+44-7700-900-123",
            "+44 (0)7700 900123",
            "+44(0)7700-900123",
            "(0)7700 900123",
            "07700 900123",
            "07700900123",
            "447700900123",
            "0044 7700 900123",
            "%2B447700900123",
            "%2B44%207700%20900123",
            "+44.7700.900.123",
            "7700 900123",
            r"\u002B447700900123",
        ] {
            let text = format!("to: {form}, status: failed");
            assert_eq!(
                s.scrub(&text),
                format!("to: {PHONE_MASK}, status: failed"),
                "{form}"
            );
        }
    }

    #[test]
    fn the_customer_id_and_the_name_are_masked_in_any_case_and_encoding() {
        let s = Scrubber::new(&jane());
        assert_eq!(
            s.scrub("customer CUS_123 (Jane Doe) / JANE DOE / jane+doe / Jane%20Doe / cus%5F123"),
            "customer cu*** (J. D.) / J. D. / J. D. / J. D. / cu***"
        );
    }

    #[test]
    fn unrelated_text_and_other_people_are_left_alone() {
        let s = Scrubber::new(&jane());
        for text in [
            "rate limit exceeded; retry in 30 s (request 8842-ab)",
            "xjane.doe+news@example.com",
            "jane.doe+news@example.com.evil.org",
            "john@example.com",
            "jane@example.com",
            "cus_1234 and xcus_123",
            "Janet Doerr",
            "+44 7700 900124",
            "+4477009001234",
            "order 97700900123",
            "id 12345",
        ] {
            assert_eq!(s.scrub(text), text, "{text}");
        }
    }

    #[test]
    fn a_short_national_number_is_masked_only_with_its_country_code_or_trunk_zero() {
        // A (fictional) 6-digit national number: alone it matches too much.
        let s = Scrubber {
            rules: vec![Rule {
                re: Regex::new(&phone_pattern("354", "412345")).unwrap(),
                masked: "+35*****45".into(),
                edge: Edge::Digits,
            }],
        };
        assert_eq!(s.scrub("+354 412 345"), "+35*****45");
        assert_eq!(s.scrub("0412345"), "+35*****45");
        assert_eq!(s.scrub("ticket 412345"), "ticket 412345");
    }

    #[test]
    fn scrub_json_masks_keys_and_values_at_any_depth() {
        let s = Scrubber::new(&jane());
        let mut v =
            serde_json::json!({"JANE.DOE+NEWS@EXAMPLE.COM": {"to": ["+447700900123"]}, "n": 3});
        s.scrub_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({EMAIL_MASK: {"to": [PHONE_MASK]}, "n": 3})
        );
    }

    #[test]
    fn the_one_off_function_gives_the_same_text_as_the_scrubber() {
        let t = "jane.doe%2Bnews%40example.com / 07700 900123";
        assert_eq!(scrub(t, &jane()), Scrubber::new(&jane()).scrub(t));
    }

    proptest! {
        #[test]
        fn the_email_is_masked_wherever_it_sits_in_any_case(
            before in "[ a-z0-9:;,<>\"'=&?/]{0,20}",
            after in "[ ,;:>\"'&?/]{0,20}",
            upper in proptest::collection::vec(any::<bool>(), 25),
            encode_at in proptest::option::of(0usize..25),
        ) {
            let email = "jane.doe+news@example.com";
            let mut form = String::new();
            for (i, c) in email.chars().enumerate() {
                if encode_at == Some(i) {
                    let _ = write!(form, "%{:02X}", c as u32);
                } else if upper[i] {
                    form.extend(c.to_uppercase());
                } else {
                    form.push(c);
                }
            }
            // Text before ending in an address character would make a longer address.
            prop_assume!(!before.ends_with(|c: char| c.is_alphanumeric()));
            let out = Scrubber::new(&jane()).scrub(&format!("{before}{form}{after}"));
            prop_assert_eq!(out, format!("{before}{EMAIL_MASK}{after}"));
        }

        #[test]
        fn the_phone_is_masked_with_any_separators(
            seps in proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("-"), Just("."), Just(" - ")], 10),
            prefix in prop_oneof![Just("+44"), Just("0044"), Just("+44 (0)"), Just("0"), Just("44"), Just("%2B44")],
        ) {
            let mut form = prefix.to_string();
            for (d, sep) in "7700900123".chars().zip(&seps) {
                form.push_str(sep);
                form.push(d);
            }
            let out = Scrubber::new(&jane()).scrub(&format!("sms to {form} failed"));
            prop_assert_eq!(out, format!("sms to {PHONE_MASK} failed"));
        }

        #[test]
        fn text_without_the_identities_is_unchanged(text in "[a-zA-Z0-9 .,:;@%+()-]{0,80}") {
            prop_assume!(!text.to_lowercase().contains("jane"));
            prop_assume!(!text.to_lowercase().contains("cus"));
            prop_assume!(!text.chars().filter(|c| c.is_ascii_digit()).collect::<String>().contains("7700900123"));
            prop_assert_eq!(Scrubber::new(&jane()).scrub(&text), text);
        }
    }
}
