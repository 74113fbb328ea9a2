//! Subject identities, parsed and normalised at the edge.
//!
//! Every identity that enters lethe — from the CLI, a webhook or OpenDSR — goes
//! through these constructors first. Past this point the engine only ever sees
//! valid values, and the `Display`/`Debug` of each type is *masked* so that an
//! identity cannot leak into a log line, a panic message or an event by accident.
//! The raw value is reachable only through `expose()`, which makes every place
//! that needs it (a connector building a request) easy to find.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identity was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The email is not of the form local@domain.tld.
    #[error("invalid email: {0}")]
    Email(&'static str),
    /// The phone number is not a number in international format.
    #[error("invalid phone: {0}")]
    Phone(String),
    /// The customer id breaks its grammar ([`CustomerId`]).
    #[error("invalid customer id: {0}")]
    CustomerId(String),
    /// The name is empty or too long.
    #[error("invalid name: {0}")]
    Name(&'static str),
    /// No identity at all was given.
    #[error("no identity given: at least one of email, phone, customer_id is required")]
    Empty,
}

/// A normalised email address (trimmed, lower-cased domain and local part),
/// with the address as given beside it.
///
/// lethe matches on the normalised form, but some processors compare addresses
/// case-sensitively (Stripe's `GET /v1/customers?email=`), so the form the
/// subject gave is kept too ([`Email::as_given`]). It is what is serialised
/// (sealed at rest): parsing it again yields both forms. A value sealed before
/// the as-given form was kept is the normalised form, which then stands for both.
/// Equality and hashing look at the normalised form only.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email {
    normalised: String,
    given: String,
}

impl PartialEq for Email {
    fn eq(&self, other: &Self) -> bool {
        self.normalised == other.normalised
    }
}
impl Eq for Email {}
impl std::hash::Hash for Email {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.normalised.hash(state)
    }
}

impl Email {
    /// Parse and normalise an email address.
    pub fn parse(raw: &str) -> Result<Self, IdentityError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(IdentityError::Email("empty"));
        }
        if s.len() > 254 {
            return Err(IdentityError::Email("longer than 254 characters"));
        }
        if s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible_format(c))
        {
            return Err(IdentityError::Email(
                "contains whitespace, control or invisible formatting characters",
            ));
        }
        let (local, domain) = s
            .rsplit_once('@')
            .ok_or(IdentityError::Email("missing '@'"))?;
        if local.is_empty() {
            return Err(IdentityError::Email("nothing before '@'"));
        }
        if local.len() > 64 {
            return Err(IdentityError::Email("local part longer than 64 characters"));
        }
        if local.contains('@') || local.contains(['<', '>', '(', ')', ',', ';', ':', '"', '[', ']'])
        {
            return Err(IdentityError::Email(
                "local part has characters that need quoting",
            ));
        }
        // Legal in RFC 5322, but they change a URL's meaning if a connector
        // ever put the address in a path: refused at the edge.
        if local.contains(['/', '\\', '?', '#', '%', '`']) {
            return Err(IdentityError::Email(
                "local part contains one of / \\ ? # % ` (refused: they change a URL's meaning)",
            ));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(IdentityError::Email("misplaced '.' in local part"));
        }
        if !domain.contains('.') {
            return Err(IdentityError::Email("domain has no '.'"));
        }
        for label in domain.split('.') {
            if label.is_empty() {
                return Err(IdentityError::Email("empty domain label"));
            }
            if label.len() > 63 {
                return Err(IdentityError::Email(
                    "domain label longer than 63 characters",
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(IdentityError::Email("domain label starts or ends with '-'"));
            }
            if !label.chars().all(|c| c.is_alphanumeric() || c == '-') {
                return Err(IdentityError::Email(
                    "domain has characters other than letters, digits, '-'",
                ));
            }
        }
        Ok(Email {
            normalised: format!("{}@{}", local.to_lowercase(), domain.to_lowercase()),
            given: s.to_string(),
        })
    }

    /// The raw, normalised address. Only connectors building a request should need this.
    pub fn expose(&self) -> &str {
        &self.normalised
    }

    /// The raw address as the subject gave it (trimmed, case kept), for
    /// processors that compare addresses case-sensitively. Same caution as `expose`.
    pub fn as_given(&self) -> &str {
        &self.given
    }

    /// A masked form for display: `j***@example.com` (a local part shorter
    /// than four characters shows none of them: `***@example.com`).
    pub fn masked(&self) -> String {
        let (local, domain) = self
            .normalised
            .rsplit_once('@')
            .unwrap_or(("", &self.normalised));
        format!("{}***@{domain}", visible_prefix(local, 1))
    }
}

impl TryFrom<String> for Email {
    type Error = IdentityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Email::parse(&value)
    }
}
impl From<Email> for String {
    fn from(value: Email) -> Self {
        value.given
    }
}
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Email({})", self.masked())
    }
}
impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// The start of a value a masked form may show: at most `max` characters and
/// at most a quarter of the value, so a short value shows nothing.
fn visible_prefix(value: &str, max: usize) -> String {
    let n = value.chars().count();
    value.chars().take(max.min(n / 4)).collect()
}

/// A phone number in E.164 form: `+`, the country code, the national number.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

/// What every phone refusal tells the sender to send instead.
const PHONE_FORMAT: &str =
    "expected international format: + or 00, the country code, then the number (e.g. +44 20 7946 0958)";

/// A masked form of a value that was refused (it may be a real number):
/// the first three and last two characters, stars between.
fn mask_refused(raw: &str) -> String {
    let chars: Vec<char> = raw.trim().chars().collect();
    let n = chars.len();
    if n <= 6 {
        return "*".repeat(n.max(1));
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[n - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(n - 5))
}

/// Every national-number length that any kind of number (fixed, mobile, toll
/// free…) of any region sharing a country code can have, sorted.
fn possible_lengths(regions: &[&phonenumber::metadata::Metadata]) -> Vec<u16> {
    let mut out: Vec<u16> = regions
        .iter()
        .flat_map(|m| {
            let d = m.descriptors();
            [
                Some(d.general()),
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ]
            .into_iter()
            .flatten()
            .flat_map(|desc| desc.possible_length().iter().copied())
            .collect::<Vec<_>>()
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

impl Phone {
    /// Parse a phone number given in international format (`+` or `00`, the
    /// country code, the number) into E.164 with the `phonenumber` crate.
    ///
    /// Spaces, dashes, dots, slashes and brackets are separators. A trunk
    /// prefix written after the country code (`+44 (0)7700 900123`,
    /// `+44 07700 900123`) is dropped where the country dials one (`0` in the
    /// UK, Germany, France…) and kept where it is part of the number (Italy).
    /// A number without a country code is refused: guessing the country would
    /// erase the wrong person's messages. The number must have a length that
    /// the country's numbering plan allows; its range is not checked against
    /// the allocation tables (those go stale, and refusing a real subject's
    /// request because of stale metadata is worse than accepting a reserved range).
    pub fn parse(raw: &str) -> Result<Self, IdentityError> {
        let refuse = |why: &str| {
            IdentityError::Phone(format!("`{}` {why}; {PHONE_FORMAT}", mask_refused(raw)))
        };
        let s = raw.trim();
        if s.is_empty() {
            return Err(IdentityError::Phone(format!("empty; {PHONE_FORMAT}")));
        }
        if s.chars()
            .any(|c| !(c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '.' | '/' | '(' | ')')))
        {
            return Err(refuse(
                "has characters other than digits, '+', spaces, '-', '.', '/' and brackets",
            ));
        }
        let compact: String = s
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '/'))
            .collect::<String>()
            .replace("(0)", "0")
            .replace(['(', ')'], "");
        let international = if let Some(rest) = compact.strip_prefix('+') {
            rest
        } else if let Some(rest) = compact.strip_prefix("00") {
            rest
        } else {
            return Err(refuse("has no country code"));
        };
        if international.is_empty() || !international.chars().all(|c| c.is_ascii_digit()) {
            return Err(refuse("must have only digits after the leading + (or 00)"));
        }
        if international.len() > 17 {
            return Err(refuse("is too long for a phone number"));
        }
        let parsed = phonenumber::parse(None, format!("+{international}"))
            .map_err(|e| refuse(&format!("is not a phone number ({e})")))?;
        let code = parsed.code().value();
        let db = &*phonenumber::metadata::DATABASE;
        let regions = db.by_code(&code).unwrap_or_default();
        let Some(meta) = regions
            .iter()
            .find(|m| m.is_main_country_for_code())
            .or(regions.first())
        else {
            return Err(refuse(&format!("has an unknown country code +{code}")));
        };
        let cc = code.to_string();
        let mut national = international.strip_prefix(cc.as_str()).unwrap_or_default();
        if meta.national_prefix() == Some("0") {
            // The trunk 0 is dialled inside the country only: never part of E.164.
            national = national.strip_prefix('0').unwrap_or(national);
        }
        let len = u16::try_from(national.len()).unwrap_or(u16::MAX);
        let possible = possible_lengths(&regions);
        match (possible.first(), possible.last()) {
            (Some(min), _) if len < *min => {
                return Err(refuse(&format!(
                    "is too short for a number with country code +{cc}"
                )))
            }
            (_, Some(max)) if len > *max => {
                return Err(refuse(&format!(
                    "is too long for a number with country code +{cc}"
                )))
            }
            _ if !possible.contains(&len) => {
                return Err(refuse(&format!(
                    "does not have a length that numbers with country code +{cc} have"
                )))
            }
            _ => {}
        }
        if cc.len() + national.len() > 15 {
            return Err(refuse("has more than 15 digits (the E.164 maximum)"));
        }
        Ok(Phone(format!("+{cc}{national}")))
    }

    /// The country calling code (`44` of `+447700900123`).
    pub fn country_code(&self) -> &str {
        let digits = &self.0[1..];
        // E.164 country codes are prefix-free: the first 1, 2 or 3 digits that
        // name a known code are the code.
        (1..=3.min(digits.len()))
            .map(|n| &digits[..n])
            .find(|cc| {
                cc.parse::<u16>()
                    .ok()
                    .and_then(|c| phonenumber::metadata::DATABASE.by_code(&c))
                    .is_some_and(|m| !m.is_empty())
            })
            .unwrap_or(&digits[..1.min(digits.len())])
    }

    /// The national significant number (`7700900123` of `+447700900123`).
    pub fn national(&self) -> &str {
        &self.0[1 + self.country_code().len()..]
    }

    /// The raw E.164 number.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Masked: `+44*******89`.
    pub fn masked(&self) -> String {
        let n = self.0.len();
        let head = &self.0[..3.min(n)];
        let tail = &self.0[n.saturating_sub(2)..];
        format!("{head}{}{tail}", "*".repeat(n.saturating_sub(5)))
    }
}
impl TryFrom<String> for Phone {
    type Error = IdentityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Phone::parse(&value)
    }
}
impl From<Phone> for String {
    fn from(value: Phone) -> Self {
        value.0
    }
}
impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Phone({})", self.masked())
    }
}
impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// The controller's own customer id (e.g. `cus_8842QX`, `C-0042`, `12345`, `acct:77`).
///
/// The grammar is strict because connectors put the id into URL paths and
/// folder paths (`customers/{{ subject.customer_id }}`): 1–128 characters of
/// `A-Z a-z 0-9 . _ : @ + -`, starting with a letter or a digit, not ending
/// with `.`, and without `..`. So `/`, `\`, `%`, `?`, `#`, spaces and `.`/`..`
/// are refused at the edge, and an id can never name another folder.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CustomerId(String);

impl CustomerId {
    /// The rule, as error messages and docs state it.
    pub const RULE: &'static str = "1-128 characters of A-Z a-z 0-9 . _ : @ + -, starting with a letter or digit, not ending with '.', no '..'";

    /// Parse (trimmed) against the grammar above.
    pub fn parse(raw: &str) -> Result<Self, IdentityError> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(IdentityError::CustomerId(
                "empty; use ".to_string() + Self::RULE,
            ));
        }
        if s.len() > 128 {
            return Err(IdentityError::CustomerId(format!(
                "longer than 128 characters; use {}",
                Self::RULE
            )));
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '@' | '+' | '-'))
        }) {
            // Name the character only when it is not a letter someone could be identified by.
            let what = if c.is_ascii_punctuation() {
                format!("contains `{c}`")
            } else if c.is_whitespace() {
                "contains whitespace".to_string()
            } else {
                "contains a character outside the allowed set".to_string()
            };
            return Err(IdentityError::CustomerId(format!(
                "{what}; use {}",
                Self::RULE
            )));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(IdentityError::CustomerId(format!(
                "must start with a letter or digit; use {}",
                Self::RULE
            )));
        }
        if s.ends_with('.') || s.contains("..") {
            return Err(IdentityError::CustomerId(format!(
                "has '..' or ends with '.'; use {}",
                Self::RULE
            )));
        }
        Ok(CustomerId(s.to_string()))
    }
    /// The raw id.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Masked: at most the first two characters, and at most a quarter of
    /// the id, then stars (`cust-0042` → `cu***`, `cus_123` → `c***`, `c1` → `***`).
    pub fn masked(&self) -> String {
        format!("{}***", visible_prefix(&self.0, 2))
    }
}
impl TryFrom<String> for CustomerId {
    type Error = IdentityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        CustomerId::parse(&value)
    }
}
impl From<CustomerId> for String {
    fn from(value: CustomerId) -> Self {
        value.0
    }
}
impl fmt::Debug for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CustomerId({})", self.masked())
    }
}

/// Invisible formatting characters (zero-width, bidi controls, BOM) that make
/// a value look like another one.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// A person's name, as given (trimmed, inner whitespace collapsed).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    /// Parse: 1–200 characters, no control or invisible formatting characters.
    /// No built-in connector puts a name into a URL path (only the webhook
    /// connector sends it, JSON-encoded in the body).
    pub fn parse(raw: &str) -> Result<Self, IdentityError> {
        let s = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.is_empty() {
            return Err(IdentityError::Name("empty"));
        }
        if s.chars().count() > 200 {
            return Err(IdentityError::Name("longer than 200 characters"));
        }
        if s.chars().any(|c| c.is_control() || is_invisible_format(c)) {
            return Err(IdentityError::Name(
                "contains control or invisible formatting characters (e.g. bidi overrides)",
            ));
        }
        Ok(Name(s))
    }
    /// The raw name.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Masked: initials only.
    pub fn masked(&self) -> String {
        self.0
            .split(' ')
            .filter_map(|w| w.chars().next())
            .map(|c| format!("{c}."))
            .collect::<Vec<_>>()
            .join(" ")
    }
}
impl TryFrom<String> for Name {
    type Error = IdentityError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Name::parse(&value)
    }
}
impl From<Name> for String {
    fn from(value: Name) -> Self {
        value.0
    }
}
impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.masked())
    }
}

/// Everything we know to identify one subject. At least one of email, phone or
/// customer id is present (a name alone identifies nobody).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    /// Phone number (E.164).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// The controller's customer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    /// Full name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
}

impl Subject {
    /// Build a subject from raw strings, validating each and requiring one identifier.
    pub fn parse(
        email: Option<&str>,
        phone: Option<&str>,
        customer_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<Self, IdentityError> {
        let s = Subject {
            email: email.map(Email::parse).transpose()?,
            phone: phone.map(Phone::parse).transpose()?,
            customer_id: customer_id.map(CustomerId::parse).transpose()?,
            name: name.map(Name::parse).transpose()?,
        };
        s.validate()?;
        Ok(s)
    }

    /// A rectification's new values from `field=value` pairs (`email`,
    /// `phone`, `customer_id`, `name`), each validated like an identity. An
    /// unknown or repeated field, or a malformed value, is an error naming
    /// the field (never quoting the value). At least one pair is needed.
    pub fn changes<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Subject, String> {
        let mut s = Subject::default();
        let mut any = false;
        for (field, value) in pairs {
            let field = field.trim();
            let twice = || format!("`{field}` is given twice");
            let bad = |e: IdentityError| format!("the new `{field}` is not valid: {e}");
            match field {
                "email" if s.email.is_some() => return Err(twice()),
                "email" => s.email = Some(Email::parse(value).map_err(bad)?),
                "phone" if s.phone.is_some() => return Err(twice()),
                "phone" => s.phone = Some(Phone::parse(value).map_err(bad)?),
                "customer_id" if s.customer_id.is_some() => return Err(twice()),
                "customer_id" => s.customer_id = Some(CustomerId::parse(value).map_err(bad)?),
                "name" if s.name.is_some() => return Err(twice()),
                "name" => s.name = Some(Name::parse(value).map_err(bad)?),
                other => {
                    return Err(format!(
                        "unknown field `{other}` (a rectification can set email, phone, name or customer_id)"
                    ))
                }
            }
            any = true;
        }
        if !any {
            return Err(
                "no new values: give at least one field=value (email, phone, name, customer_id)"
                    .into(),
            );
        }
        Ok(s)
    }

    /// Require at least one identifying value.
    pub fn validate(&self) -> Result<(), IdentityError> {
        if self.email.is_none() && self.phone.is_none() && self.customer_id.is_none() {
            return Err(IdentityError::Empty);
        }
        Ok(())
    }

    /// The masked form used everywhere a person reads (status, reports, events).
    pub fn masked(&self) -> String {
        let mut parts = vec![];
        if let Some(e) = &self.email {
            parts.push(e.masked());
        }
        if let Some(p) = &self.phone {
            parts.push(p.masked());
        }
        if let Some(c) = &self.customer_id {
            parts.push(c.masked());
        }
        if let Some(n) = &self.name {
            parts.push(n.masked());
        }
        parts.join(", ")
    }

    /// The value used as the matching key (keyed-hashed before storage): the
    /// email if present, else the phone, else the customer id.
    pub fn match_key(&self) -> String {
        if let Some(e) = &self.email {
            format!("email:{}", e.expose())
        } else if let Some(p) = &self.phone {
            format!("phone:{}", p.expose())
        } else if let Some(c) = &self.customer_id {
            format!("customer_id:{}", c.expose())
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn changes_validate_each_field_and_name_the_unknown_or_repeated_one() {
        let c = Subject::changes([("email", "New@Example.org"), ("name", "Jane New")]).unwrap();
        assert_eq!(c.email.unwrap().expose(), "new@example.org");
        assert_eq!(c.name.unwrap().expose(), "Jane New");
        let e = Subject::changes([("nickname", "JJ")]).unwrap_err();
        assert!(e.contains("unknown field `nickname`"), "{e}");
        let e = Subject::changes([("email", "not-an-email")]).unwrap_err();
        assert!(
            e.contains("the new `email`") && !e.contains("not-an-email"),
            "{e}"
        );
        let e = Subject::changes([("name", "A"), ("name", "B")]).unwrap_err();
        assert!(e.contains("given twice"), "{e}");
        assert!(Subject::changes(std::iter::empty::<(&str, &str)>()).is_err());
        // A name alone is a valid change (it identifies nobody, but it is not an identity here).
        assert!(Subject::changes([("name", "Jane New")]).is_ok());
    }
    use super::*;

    #[test]
    fn email_is_normalised_to_lower_case_and_trimmed() {
        let e = Email::parse("  Jane.Doe@Example.COM ").unwrap();
        assert_eq!(e.expose(), "jane.doe@example.com");
    }

    #[test]
    fn the_email_as_given_is_kept_beside_the_normalised_one_and_survives_sealing() {
        let e = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(e.expose(), "ada.lovelace@example.com");
        assert_eq!(e.as_given(), "Ada.Lovelace@Example.COM");
        assert_eq!(e, Email::parse("ada.lovelace@example.com").unwrap());
        let s = Subject::parse(Some("Ada.Lovelace@Example.COM"), None, None, None).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        let back: Subject = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.email.as_ref().map(Email::as_given),
            Some("Ada.Lovelace@Example.COM")
        );
        // Sealed before the as-given form was kept: the normalised form stands for both.
        let old: Subject = serde_json::from_str(r#"{"email":"ada.lovelace@example.com"}"#).unwrap();
        let e = old.email.unwrap();
        assert_eq!(e.as_given(), "ada.lovelace@example.com");
        assert_eq!(e.expose(), "ada.lovelace@example.com");
    }

    #[test]
    fn malformed_emails_are_refused_with_a_reason() {
        for bad in [
            "",
            "jane",
            "jane@",
            "@example.com",
            "jane@example",
            "ja ne@example.com",
            "jane@exa_mple.com",
            "jane..d@example.com",
            "jane@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn email_display_and_debug_are_masked() {
        let e = Email::parse("jane@example.com").unwrap();
        assert_eq!(format!("{e}"), "j***@example.com");
        assert!(!format!("{e:?}").contains("jane"));
    }

    #[test]
    fn phone_is_e164() {
        assert_eq!(
            Phone::parse("+44 20 7946-0958").unwrap().expose(),
            "+442079460958"
        );
        assert_eq!(
            Phone::parse("0044 20 7946 0958").unwrap().expose(),
            "+442079460958"
        );
        assert!(Phone::parse("020 7946 0958").is_err());
        assert!(Phone::parse("+44abc").is_err());
        assert!(Phone::parse("+1234").is_err());
        assert!(!format!("{:?}", Phone::parse("+442079460958").unwrap()).contains("7946"));
    }

    #[test]
    fn the_trunk_zero_in_brackets_after_the_country_code_is_dropped() {
        for form in [
            "+44(0)7700-900123",
            "+44 (0)7700 900123",
            "+44 07700 900123",
            "0044 (0) 7700 900123",
        ] {
            assert_eq!(
                Phone::parse(form).map(|p| p.expose().to_string()),
                Ok("+447700900123".to_string()),
                "{form}"
            );
        }
    }

    #[test]
    fn international_forms_with_any_separators_give_the_same_e164_number() {
        for (form, want) in [
            ("+44-7700-900-123", "+447700900123"),
            ("0044 7700 900123", "+447700900123"),
            ("+44.7700.900.123", "+447700900123"),
            ("+1 (415) 555-2671", "+14155552671"),
            ("+49 30 123456", "+4930123456"),
            ("+33 6 12 34 56 78", "+33612345678"),
            // Italy keeps its leading 0: it is part of the number there.
            ("+39 06 6982 1234", "+390669821234"),
        ] {
            assert_eq!(Phone::parse(form).unwrap().expose(), want, "{form}");
        }
    }

    #[test]
    fn the_country_code_and_national_number_of_a_phone_are_split_by_the_numbering_plan() {
        let p = Phone::parse("+44 7700 900123").unwrap();
        assert_eq!((p.country_code(), p.national()), ("44", "7700900123"));
        let p = Phone::parse("+1 415 555 2671").unwrap();
        assert_eq!((p.country_code(), p.national()), ("1", "4155552671"));
        let p = Phone::parse("+353 85 123 4567").unwrap();
        assert_eq!((p.country_code(), p.national()), ("353", "851234567"));
    }

    #[test]
    fn a_phone_that_is_not_a_number_in_international_format_is_refused_naming_the_expected_format()
    {
        for bad in [
            "",
            "garbage",
            "+44 7700 9OO123",
            "07700 900123",
            "7700900123",
            "+44 7700",
            "+1234",
            "+44 7700 900123 456 789",
            "+999 123456789",
            "++447700900123",
            "+",
        ] {
            let e = Phone::parse(bad).expect_err(bad);
            let m = e.to_string();
            assert!(m.contains("expected international format"), "{bad:?}: {m}");
            if bad.len() > 6 {
                assert!(
                    !m.replace(PHONE_FORMAT, "").contains(bad.trim()),
                    "{bad:?}: the refusal quotes the raw value: {m}"
                );
            }
        }
        let m = Phone::parse("07700 900123").unwrap_err().to_string();
        assert!(m.contains("`077*******23`"), "{m}");
        assert!(m.contains("no country code"), "{m}");
    }

    #[test]
    fn phone_display_and_debug_stay_masked() {
        let p = Phone::parse("+44(0)7700-900123").unwrap();
        assert_eq!(format!("{p}"), "+44********23");
        assert_eq!(format!("{p:?}"), "Phone(+44********23)");
    }

    #[test]
    fn a_subject_needs_an_identifier_not_only_a_name() {
        assert_eq!(
            Subject::parse(None, None, None, Some("Jane")),
            Err(IdentityError::Empty)
        );
        assert!(Subject::parse(Some("jane@example.com"), None, None, None).is_ok());
    }

    #[test]
    fn real_customer_ids_pass_and_path_steering_ones_are_refused() {
        for good in [
            "cus_8842QX",
            "C-0042",
            "12345",
            "acct:77",
            "C-1.2",
            "x@y",
            "a+b",
        ] {
            assert!(CustomerId::parse(good).is_ok(), "{good:?} should pass");
        }
        for bad in [
            "x/..",
            "..",
            ".",
            "%2e%2e",
            "a?b",
            "a#b",
            "../../etc",
            "a b",
            "a\\b",
            "x.",
            ".x",
            "a..b",
            "-x",
            "é",
            "a%2Fb",
            "a;b",
        ] {
            let e = CustomerId::parse(bad).expect_err(bad);
            assert!(e.to_string().contains("A-Z a-z 0-9"), "{e} names the rule");
        }
        assert!(CustomerId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn emails_with_url_characters_or_invisible_ones_are_refused() {
        for good in ["a+b@x.com", "o'brien@x.com", "x=y@x.com"] {
            assert!(Email::parse(good).is_ok(), "{good:?} should pass");
        }
        for bad in [
            "a/b@x.com",
            "a?b@x.com",
            "a#b@x.com",
            "a%b@x.com",
            "a\u{7}b@x.com",
            "a\u{202E}b@x.com",
            "a b@x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Name::parse("Jane \u{202E}Doe").is_err());
        assert!(Name::parse("Jane\u{0}Doe").is_err());
        assert!(Name::parse("Siobhán O'Brien-Ní Dhuibhir").is_ok());
    }
}
