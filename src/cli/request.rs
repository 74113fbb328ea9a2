//! `lethe request erase|export|object|rectify`: files a request. Every flag (identities,
//! external id, workflow) is validated before the store is opened, so bad input
//! writes nothing; the same external id never files twice.

use super::helpers::{engine, subject_from_flags};
use super::BadInput;
use crate::config::Config;
use crate::domain::RequestKind;
use crate::engine::SubmitOptions;
use crate::view::RequestView;
use chrono::Utc;
use clap::Subcommand;

/// `request erase|export`.
#[derive(Debug, Subcommand)]
pub enum RequestCmd {
    /// Erase the subject everywhere.
    Erase(RequestArgs),
    /// Collect the subject's data from everywhere.
    Export(RequestArgs),
    /// Objection (Art. 21): stop processing without deleting — unsubscribe
    /// from mailing lists, opt out; `not_applicable` where a processor cannot.
    Object(RequestArgs),
    /// Rectification (Art. 16): correct the subject's data, e.g.
    /// `--email old@x --set email=new@x --set name="Jane Doe"`.
    Rectify(RectifyArgs),
}

/// A rectification: the subject's identities and the new values.
#[derive(Debug, clap::Args)]
pub struct RectifyArgs {
    /// The subject, as the processors know them now.
    #[command(flatten)]
    pub request: RequestArgs,
    /// A new value, `field=value` (fields: email, phone, name, customer_id);
    /// repeat for several. Sealed with the identities, never logged.
    #[arg(long = "set", value_name = "FIELD=VALUE", required = true)]
    pub set: Vec<String>,
}

/// Identities and options of a new request.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// Email address.
    #[arg(long)]
    pub email: Option<String>,
    /// Phone number in international format (+44 7700 900123, 0044…, +44 (0)7700…).
    #[arg(long)]
    pub phone: Option<String>,
    /// The customer id in your systems.
    #[arg(long)]
    pub customer_id: Option<String>,
    /// Full name.
    #[arg(long)]
    pub name: Option<String>,
    /// A workflow other than the default for the kind.
    #[arg(long)]
    pub workflow: Option<String>,
    /// An external reference (idempotency: the same one never files twice).
    #[arg(long)]
    pub external_id: Option<String>,
    /// The subject's identity is not verified yet: no processor is called
    /// until `lethe verify ID --method …`.
    #[arg(long)]
    pub unverified: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `lethe request erase|export|object|rectify`.
pub(super) async fn request(config: Config, kind: RequestCmd) -> anyhow::Result<u8> {
    let (kind, args, set) = match kind {
        RequestCmd::Erase(a) => (RequestKind::Erasure, a, None),
        RequestCmd::Export(a) => (RequestKind::Export, a, None),
        RequestCmd::Object(a) => (RequestKind::Objection, a, None),
        RequestCmd::Rectify(a) => (RequestKind::Rectification, a.request, Some(a.set)),
    };
    let changes = match set {
        None => None,
        Some(pairs) => {
            let mut split = Vec::with_capacity(pairs.len());
            for p in &pairs {
                let Some((f, v)) = p.split_once('=') else {
                    let field = p.chars().take(40).collect::<String>();
                    return Err(BadInput(format!(
                        "--set `{field}…`: expected FIELD=VALUE (fields: email, phone, name, customer_id)"
                    ))
                    .into());
                };
                split.push((f, v));
            }
            Some(
                crate::domain::Subject::changes(split)
                    .map_err(|e| BadInput(format!("--set: {e}")))?,
            )
        }
    };
    // Validate everything before the store is opened: bad input writes nothing.
    let subject = subject_from_flags(
        args.email.as_deref(),
        args.phone.as_deref(),
        args.customer_id.as_deref(),
        args.name.as_deref(),
    )?;
    if let Some(ext) = &args.external_id {
        if let Some(why) = crate::intake::webhook::external_id_problem(ext) {
            return Err(BadInput(format!(
                "--external-id: {why} (an external id is 1 to 200 characters, no control characters)"
            ))
            .into());
        }
    }
    config
        .workflows
        .pick(kind, args.workflow.as_deref())
        .map_err(BadInput)?;
    let e = engine(config).await?;
    let sub = e
        .submit(
            kind,
            subject,
            SubmitOptions {
                workflow: args.workflow,
                external_id: args.external_id,
                callback_url: None,
                changes,
                unverified: args.unverified,
                follows: None,
            },
        )
        .await?;
    let steps = e.store.steps(&sub.request.id).await?;
    let mut view = RequestView::new(&sub.request, Some(&steps), Utc::now());
    view.warnings = sub.warnings.clone();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        if !sub.created {
            println!("(already filed with this external id)");
        }
        print!("{}", view.to_text());
        println!("\nnext: `lethe run --until-idle` (or a running `lethe daemon`) carries it out");
    }
    Ok(0)
}
