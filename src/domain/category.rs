//! Processor categories: what kind of service a processor is. Workflows select
//! by category (`category:mailing_list`) and connector definitions declare one,
//! so the type lives here, below both.

use serde::Deserialize;

/// A processor category.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize, serde::Serialize, PartialOrd, Ord,
)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Newsletters, mailing lists.
    MailingList,
    /// Helpdesks.
    Ticketing,
    /// Invoicing, payments.
    Accounting,
    /// Web hosting panels.
    Hosting,
    /// File and object storage.
    ObjectStorage,
    /// Text messages.
    Sms,
    /// Anything else.
    Other,
}

impl Category {
    /// All categories.
    pub const ALL: [Category; 7] = [
        Category::MailingList,
        Category::Ticketing,
        Category::Accounting,
        Category::Hosting,
        Category::ObjectStorage,
        Category::Sms,
        Category::Other,
    ];
    /// The config / `--json` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::MailingList => "mailing_list",
            Category::Ticketing => "ticketing",
            Category::Accounting => "accounting",
            Category::Hosting => "hosting",
            Category::ObjectStorage => "object_storage",
            Category::Sms => "sms",
            Category::Other => "other",
        }
    }
    /// Parse a name.
    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }
}
