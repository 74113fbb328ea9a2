//! The one identity scrubber: every form in which a processor may echo the
//! subject's identities is replaced by the masked form before processor text
//! (an error body, a message) is stored, logged or reported.
//!
//! Processors do not echo an identity the way we sent it: an email comes back
//! upper-cased, percent-encoded (`jane%40example.com`), form-encoded, JSON-escaped
//! (`jane\u0040example.com`); a phone in the processor's own format
//! (`+44 7700 900123`, `07700 900123`, `447700900123`, `%2B447700900123`).
//! The text is decoded once into units (a character with the span of the
//! original text it came from: `%40`, `%2540`, `\u0040`, `&#64;` are each one
//! `@`), case-folded, and the identities are matched against those units; a
//! match is replaced in the original text. No pattern is compiled: building a
//! [`Scrubber`] is cheap, and [`scrub`] is the one-off form.
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

/// The fewest digits a national number must have to be masked on its own,
/// without a country code or trunk prefix (shorter ones match too much).
const MIN_BARE_NATIONAL: usize = 7;

/// One identity to find, and what replaces it.
#[derive(Debug, Clone)]
enum Rule {
    /// An email address: the folded characters, in order.
    Email(Vec<char>),
    /// A phone number: its written forms as sequences of `+` and digits.
    Phone(Vec<Vec<char>>),
    /// A customer id: the folded characters, in order.
    Id(Vec<char>),
    /// A name: its folded words, separated in the text by whitespace or `+`.
    Name(Vec<Vec<char>>),
}

/// The identities of one subject, ready to be found in any text.
/// Build it once per subject ([`Scrubber::new`]) and call [`Scrubber::scrub`]
/// on every processor text.
#[derive(Debug, Clone)]
pub struct Scrubber {
    rules: Vec<(Rule, String)>,
}

/// Replace every form of every identity of `subject` that occurs in `text` by
/// its masked form (see the module docs for the forms).
pub fn scrub(text: &str, subject: &Subject) -> String {
    Scrubber::new(subject).scrub(text)
}

impl Scrubber {
    /// The forms of `subject`'s email, phone, customer id and name.
    pub fn new(subject: &Subject) -> Scrubber {
        let mut rules = Vec::new();
        if let Some(e) = &subject.email {
            rules.push((Rule::Email(folded(e.expose())), e.masked()));
        }
        if let Some(p) = &subject.phone {
            rules.push((
                Rule::Phone(phone_forms(p.country_code(), p.national())),
                p.masked(),
            ));
        }
        if let Some(c) = &subject.customer_id {
            rules.push((Rule::Id(folded(c.expose())), c.masked()));
        }
        if let Some(n) = &subject.name {
            let words = n.expose().split_whitespace().map(folded).collect();
            rules.push((Rule::Name(words), n.masked()));
        }
        Scrubber { rules }
    }

    /// `text` with every occurrence of the subject's identities, in any of the
    /// forms above, replaced by the identity's masked form. Other text is unchanged.
    pub fn scrub(&self, text: &str) -> String {
        if self.rules.is_empty() || text.is_empty() {
            return text.to_string();
        }
        let units = units(text);
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut p = 0;
        while p < units.len() {
            if !self.may_start(units[p].c) {
                p += 1;
                continue;
            }
            let hit = self
                .rules
                .iter()
                .find_map(|(rule, masked)| rule.match_at(&units, p).map(|(s, e)| (s, e, masked)));
            match hit {
                Some((s, e, masked)) => {
                    out.push_str(&text[copied..units[s].start]);
                    out.push_str(masked);
                    copied = units[e - 1].end;
                    p = e;
                }
                None => p += 1,
            }
        }
        out.push_str(&text[copied..]);
        out
    }

    /// Whether any identity can start with `c` (skips most of a text at once).
    fn may_start(&self, c: char) -> bool {
        self.rules.iter().any(|(rule, _)| match rule {
            Rule::Email(n) | Rule::Id(n) => n.first() == Some(&c),
            Rule::Name(w) => w.first().and_then(|w| w.first()) == Some(&c),
            Rule::Phone(_) => c.is_ascii_digit() || c == '+' || c == '(',
        })
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

/// One decoded, case-folded character of the text and the bytes it came from.
#[derive(Debug, Clone, Copy)]
struct Unit {
    c: char,
    start: usize,
    end: usize,
}

fn fold(c: char) -> char {
    let mut l = c.to_lowercase();
    match (l.next(), l.next()) {
        (Some(x), None) => x,
        _ => c,
    }
}

fn folded(s: &str) -> Vec<char> {
    s.chars().map(fold).collect()
}

/// Decode `text` into units: percent-encoding (also twice: `%2540`), JSON
/// `\uXXXX` escapes and HTML character references become the character they encode.
fn units(text: &str) -> Vec<Unit> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let (c, len) = match decode_escape(text, i) {
            Some(d) => d,
            None => match text[i..].chars().next() {
                Some(c) => (c, c.len_utf8()),
                None => break,
            },
        };
        out.push(Unit {
            c: fold(c),
            start: i,
            end: i + len,
        });
        i += len;
    }
    out
}

fn hex_byte(s: &str) -> Option<u8> {
    let h = s.get(..2)?;
    if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(h, 16).ok()
}

/// One percent-encoded byte at `i` (`%HH` or `%25HH`): the byte and its length.
fn percent_byte(text: &str, i: usize) -> Option<(u8, usize)> {
    let rest = text.get(i..)?.strip_prefix('%')?;
    if let Some(twice) = rest.strip_prefix("25") {
        if let Some(b) = hex_byte(twice) {
            return Some((b, 5));
        }
    }
    hex_byte(rest).map(|b| (b, 3))
}

fn decode_escape(text: &str, i: usize) -> Option<(char, usize)> {
    let rest = &text[i..];
    if rest.starts_with('%') {
        let (first, mut len) = percent_byte(text, i)?;
        let need = match first {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return None,
        };
        let mut bytes = vec![first];
        while bytes.len() < need {
            let (b, l) = percent_byte(text, i + len)?;
            bytes.push(b);
            len += l;
        }
        let c = std::str::from_utf8(&bytes).ok()?.chars().next()?;
        return Some((c, len));
    }
    if let Some(hex) = rest.strip_prefix("\\u").and_then(|r| r.get(..4)) {
        if hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let c = u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)?;
            return Some((c, 6));
        }
        return None;
    }
    if let Some(r) = rest.strip_prefix("&#") {
        let (digits, radix, skip) = match r.strip_prefix(['x', 'X']) {
            Some(h) => (h, 16, 3),
            None => (r, 10, 2),
        };
        let n = digits
            .bytes()
            .take_while(|b| {
                if radix == 16 {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if n == 0 || n > 8 || digits.as_bytes().get(n) != Some(&b';') {
            return None;
        }
        let c = u32::from_str_radix(&digits[..n], radix)
            .ok()
            .and_then(char::from_u32)?;
        return Some((c, skip + n + 1));
    }
    None
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Separators a processor may put between the digits of a phone number.
fn is_phone_sep(c: char) -> bool {
    matches!(c, '-' | '.' | '/' | '(' | ')' | '+') || c.is_whitespace()
}

/// The written forms of a phone number with country code `cc` and national
/// number `nsn`, longest first: `+cc0nsn`, `+cc nsn`, `00cc…`, `cc…`, `0nsn`, `nsn`.
fn phone_forms(cc: &str, nsn: &str) -> Vec<Vec<char>> {
    let mut forms: Vec<String> = vec![];
    for prefix in ["+", "00", ""] {
        forms.push(format!("{prefix}{cc}0{nsn}"));
        forms.push(format!("{prefix}{cc}{nsn}"));
    }
    forms.push(format!("0{nsn}"));
    if nsn.len() >= MIN_BARE_NATIONAL {
        forms.push(nsn.to_string());
    }
    forms.iter().map(|f| f.chars().collect()).collect()
}

impl Rule {
    /// The units `[start, end)` of a match starting at unit `p`, if any.
    fn match_at(&self, u: &[Unit], p: usize) -> Option<(usize, usize)> {
        let before = p.checked_sub(1).map(|i| u[i].c);
        let at = |i: usize| u.get(i).map(|x| x.c);
        match self {
            Rule::Email(needle) => {
                let end = literal(u, p, needle)?;
                let continues_local =
                    |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
                let continues_domain = match at(end) {
                    Some(c) if c.is_alphanumeric() || c == '-' || c == '_' => true,
                    Some('.') => at(end + 1).is_some_and(char::is_alphanumeric),
                    _ => false,
                };
                (!before.is_some_and(continues_local) && !continues_domain).then_some((p, end))
            }
            Rule::Id(needle) => {
                let end = literal(u, p, needle)?;
                word_edges(needle, before, at(end)).then_some((p, end))
            }
            Rule::Name(words) => {
                let mut j = p;
                for (k, w) in words.iter().enumerate() {
                    if k > 0 {
                        let gap = j;
                        while at(j).is_some_and(|c| c.is_whitespace() || c == '+') {
                            j += 1;
                        }
                        if j == gap {
                            return None;
                        }
                    }
                    j = literal(u, j, w)?;
                }
                let first = words.first().map(Vec::as_slice).unwrap_or_default();
                let last = words.last().map(Vec::as_slice).unwrap_or_default();
                let edges = word_edges(first, before, None) && word_edges(last, None, at(j));
                (j > p && edges).then_some((p, j))
            }
            Rule::Phone(forms) => {
                if before.is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
                // "(0)7700 900123", "(415) 555-2671": the bracket goes with the number.
                let first = if at(p) == Some('(') { p + 1 } else { p };
                forms.iter().find_map(|form| {
                    let end = digits(u, first, form)?;
                    (!at(end).is_some_and(|c| c.is_ascii_digit())).then_some((p, end))
                })
            }
        }
    }
}

/// `needle` at unit `p`, character by character: the unit after it.
fn literal(u: &[Unit], p: usize, needle: &[char]) -> Option<usize> {
    if needle.is_empty() || p + needle.len() > u.len() {
        return None;
    }
    u[p..p + needle.len()]
        .iter()
        .zip(needle)
        .all(|(x, c)| x.c == *c)
        .then_some(p + needle.len())
}

/// No letter or digit continues the value on a side where it ends in one.
fn word_edges(needle: &[char], before: Option<char>, after: Option<char>) -> bool {
    let starts = needle.first().is_some_and(|c| is_word(*c));
    let ends = needle.last().is_some_and(|c| is_word(*c));
    !(starts && before.is_some_and(is_word) || ends && after.is_some_and(is_word))
}

/// The phone form `form` from unit `p`, separators allowed between its
/// characters (not before the first): the unit after its last digit.
fn digits(u: &[Unit], p: usize, form: &[char]) -> Option<usize> {
    let mut k = 0;
    let mut j = p;
    while k < form.len() {
        let c = u.get(j)?.c;
        if c == form[k] {
            k += 1;
        } else if k == 0 || !is_phone_sep(c) {
            return None;
        }
        j += 1;
    }
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Write as _;

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
            "customer c*** (J. D.) / J. D. / J. D. / J. D. / c***"
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
            rules: vec![(
                Rule::Phone(phone_forms("354", "412345")),
                "+35*****45".into(),
            )],
        };
        assert_eq!(s.scrub("+354 412 345"), "+35*****45");
        assert_eq!(s.scrub("0412345"), "+35*****45");
        assert_eq!(s.scrub("ticket 412345"), "ticket 412345");
    }

    #[test]
    fn a_name_with_letters_beyond_ascii_is_masked_in_any_case_and_utf8_percent_encoding() {
        let s =
            Scrubber::new(&Subject::parse(None, None, Some("C-9"), Some("Zoë Ångström")).unwrap());
        assert_eq!(
            s.scrub("ZOË ÅNGSTRÖM / Zo%C3%AB+%C3%85ngstr%C3%B6m / Zoë Ångströms"),
            "Z. Å. / Z. Å. / Zoë Ångströms"
        );
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
