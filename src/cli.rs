//! The command line. Parses arguments, loads and validates everything *before*
//! touching the store (so bad input writes nothing), runs the verb, and maps
//! errors to the documented exit codes: 0 ok; 1 something needs attention;
//! 2 bad input or config; 3 store or network unavailable.

use crate::config::{Config, ConfigError, EXAMPLE};
use crate::crypto::{CryptoError, Keys};
use crate::domain::{IdentityError, RequestKind, RequestStatus, Subject};
use crate::engine::{Engine, EngineError, SubmitOptions};
use crate::store::{self, RequestFilter, Store, StoreError};
use crate::view::RequestView;
use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// lethe: carries GDPR data-subject requests through every processor, durably, with evidence.
#[derive(Debug, Parser)]
#[command(name = "lethe", version, about)]
pub struct Cli {
    /// Config file (default: $LETHE_CONFIG, else ./lethe.toml).
    #[arg(
        long,
        global = true,
        env = "LETHE_CONFIG",
        default_value = "lethe.toml"
    )]
    pub config: PathBuf,
    /// The verb.
    #[command(subcommand)]
    pub command: Command,
}

/// Verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write an example lethe.toml.
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate config, connectors and workflows; reach each processor.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// File a request.
    Request {
        /// `erase` or `export`.
        #[command(subcommand)]
        kind: RequestCmd,
    },
    /// A request and every step.
    Status {
        /// Request id.
        id: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Requests, newest first.
    List {
        /// Only this status.
        #[arg(long)]
        status: Option<String>,
        /// Only overdue requests.
        #[arg(long)]
        overdue: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Process due steps.
    Run {
        /// Process everything due now, then exit.
        #[arg(long)]
        until_idle: bool,
    },
    /// Worker, HTTP intake (when lethe.toml has `[intake]`) and callback delivery, until SIGTERM.
    Daemon,
    /// Failed steps back to pending.
    Retry {
        /// Request id.
        id: String,
        /// Only this processor.
        #[arg(long)]
        processor: Option<String>,
    },
    /// Cancel a request.
    Cancel {
        /// Request id.
        id: String,
    },
    /// The one allowed deadline extension (+2 months).
    Extend {
        /// Request id.
        id: String,
        /// Why (the subject must be told).
        #[arg(long)]
        reason: String,
    },
    /// A manual processor has done its part: its step becomes done (confirmed).
    Confirm {
        /// Request id.
        id: String,
        /// The processor whose task was carried out.
        #[arg(long)]
        processor: String,
        /// What was done (kept as evidence; identities in it are masked).
        #[arg(long)]
        note: Option<String>,
    },
    /// The audit trail.
    Audit {
        /// What to do.
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Run an erasure against local simulated processors and print the result.
    Demo,
    /// The HTTP intake's keys.
    Intake {
        /// What to do.
        #[command(subcommand)]
        cmd: IntakeCmd,
    },
    /// Ad-hoc legal holds (litigation): erasure of the subject waits until released or ended.
    Hold {
        /// What to do.
        #[command(subcommand)]
        cmd: HoldCmd,
    },
    /// A request's certificate (`report ID`), or a period report (`report --from D --to D`).
    Report {
        /// Request id: its certificate. Omit, and give --from and --to, for a period report.
        id: Option<String>,
        /// Period start: YYYY-MM-DD (inclusive, 00:00 UTC) or RFC 3339.
        #[arg(long, conflicts_with = "id", requires = "to")]
        from: Option<String>,
        /// Period end: YYYY-MM-DD (inclusive: to the end of that day, UTC) or RFC 3339 (exclusive).
        #[arg(long, conflicts_with = "id", requires = "from")]
        to: Option<String>,
        /// Output format (csv is for period reports).
        #[arg(long, value_enum, default_value = "text")]
        format: crate::report::Format,
        /// Write to this file instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Package an export request's data: a directory and a zip (or, with a passphrase, an age-encrypted zip).
    Package {
        /// Request id (an export).
        id: String,
        /// Output path without extension (default: ./lethe-export-ID): writes DIR/ and DIR.zip, or DIR.zip.age.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Encrypt with the passphrase in this environment variable (never on the command line).
        #[arg(long)]
        passphrase_env: Option<String>,
        /// The age identity file (AGE-SECRET-KEY-1…) of [store] export_recipient, to decrypt the export files.
        #[arg(long)]
        identity_file: Option<PathBuf>,
    },
    /// Master keys of the identities at rest.
    Key {
        /// What to do.
        #[command(subcommand)]
        cmd: KeyCmd,
    },
}

/// `key …`.
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Re-wrap every live data key under the current master key ([store] key_env),
    /// opening them with it or the old ones ([store] old_key_envs); payloads are untouched.
    Rotate {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `request erase|export`.
#[derive(Debug, Subcommand)]
pub enum RequestCmd {
    /// Erase the subject everywhere.
    Erase(RequestArgs),
    /// Collect the subject's data from everywhere.
    Export(RequestArgs),
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
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `hold …`.
#[derive(Debug, Subcommand)]
pub enum HoldCmd {
    /// Place a hold on a subject.
    Add {
        /// Email address.
        #[arg(long)]
        email: Option<String>,
        /// Phone number, E.164.
        #[arg(long)]
        phone: Option<String>,
        /// Customer id.
        #[arg(long)]
        customer_id: Option<String>,
        /// The legal basis, shown in reports (e.g. "litigation: case 2026-114, Art. 17(3)(e)").
        #[arg(long)]
        basis: String,
        /// When it ends: an RFC 3339 time or a duration from now ("30d"); default: until released.
        #[arg(long)]
        until: Option<String>,
        /// Only this processor (default: every processor).
        #[arg(long)]
        processor: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Release a hold: held erasures run at once if nothing else holds them.
    Release {
        /// Hold id.
        id: String,
    },
    /// Open holds (all with --all).
    List {
        /// Include released holds.
        #[arg(long)]
        all: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Recompute the hash chain; name the first broken row.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// `lethe intake …`.
#[derive(Debug, Subcommand)]
pub enum IntakeCmd {
    /// Print the Ed25519 public key that status-callback receivers pin
    /// (from the key in `[intake] callback_signing_key_env`).
    Key {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// An error with its exit code.
#[derive(Debug)]
pub struct Exit {
    /// Exit code.
    pub code: u8,
    /// Message.
    pub error: anyhow::Error,
}

/// Exit code for an error, by what caused it.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<ConfigError>()
            || cause.is::<IdentityError>()
            || cause.is::<CryptoError>()
            || cause.is::<BadInput>()
        {
            return 2;
        }
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return match s {
                StoreError::Unavailable(_) | StoreError::Migrate(_) => 3,
                _ => 1,
            };
        }
        if let Some(en) = cause.downcast_ref::<EngineError>() {
            return match en {
                EngineError::Store(StoreError::Unavailable(_)) => 3,
                EngineError::Invalid(_)
                | EngineError::NoRequest(_)
                | EngineError::ExternalIdConflict(_) => 2,
                _ => 1,
            };
        }
    }
    1
}

/// Parse the identity flags, naming the flag of a refused value
/// (`--phone: invalid phone: …`); the error keeps its exit code 2.
pub fn subject_from_flags(
    email: Option<&str>,
    phone: Option<&str>,
    customer_id: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<Subject> {
    let flag = |e: &IdentityError| match e {
        IdentityError::Email(_) => "--email",
        IdentityError::Phone(_) => "--phone",
        IdentityError::CustomerId(_) => "--customer-id",
        IdentityError::Name(_) => "--name",
        IdentityError::Empty => "identities",
    };
    Subject::parse(email, phone, customer_id, name).map_err(|e| {
        let f = flag(&e);
        anyhow::Error::new(e).context(f)
    })
}

/// Bad input found at the edge.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let daemon = matches!(cli.command, Command::Daemon);
    init_tracing(daemon);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn init_tracing(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store = store::open(&config.store.url)
        .await
        .with_context(|| format!("opening the store ({})", redact_url(&config.store.url)))?;
    store.migrate().await.context("migrating the store")?;
    Ok(store)
}

fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

async fn engine(config: Config) -> anyhow::Result<Arc<Engine>> {
    let keys = Keys::from_config(&config.store)?;
    let store = open_store(&config).await?;
    let keys = bind_keys(keys, store.as_ref()).await?;
    Ok(Engine::new(Arc::new(config), store, keys)?)
}

async fn bind_keys(keys: Keys, store: &dyn Store) -> anyhow::Result<Keys> {
    keys.bind_store(store).await.map_err(|e| match e {
        crate::crypto::KeyStoreError::Key(k) => anyhow::Error::new(k),
        crate::crypto::KeyStoreError::Store(s) => anyhow::Error::new(s),
    })
}

/// `lethe key rotate`.
async fn key_rotate(config: Config, json: bool) -> anyhow::Result<u8> {
    let keys = Keys::from_config(&config.store)?;
    let store = open_store(&config).await?;
    let keys = bind_keys(keys, store.as_ref()).await?;
    let r = keys
        .rotate(store.as_ref(), 500)
        .await
        .map_err(|e| match e {
            crate::crypto::KeyStoreError::Key(k) => anyhow::Error::new(k),
            crate::crypto::KeyStoreError::Store(s) => anyhow::Error::new(s),
        })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "re-wrapped {} data key(s) under master key {} ({}); moved {} request(s) sealed before envelope encryption onto data keys",
            r.rewrapped, r.kid, config.store.key_env, r.upgraded
        );
        println!("every live data key is now wrapped by {}: the old master keys can be destroyed (backups taken before now then no longer open)", config.store.key_env);
    }
    Ok(0)
}

/// Run a parsed command; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Init { force } = &cli.command {
        if cli.config.exists() && !force {
            return Err(BadInput(format!(
                "{} already exists (use --force to overwrite)",
                cli.config.display()
            ))
            .into());
        }
        std::fs::write(&cli.config, EXAMPLE)
            .with_context(|| format!("writing {}", cli.config.display()))?;
        println!("wrote {}", cli.config.display());
        println!("next: export LETHE_KEY=\"$(openssl rand -base64 32)\" (keep it safe), set MAILCHIMP_API_KEY, then `lethe check`");
        return Ok(0);
    }
    if let Command::Demo = &cli.command {
        return crate::demo::run().await;
    }
    let config = Config::load(&cli.config)?;
    match cli.command {
        Command::Init { .. } | Command::Demo => unreachable!("handled above"),
        Command::Report {
            id,
            from,
            to,
            format,
            output,
        } => report(config, id, from, to, format, output).await,
        Command::Package {
            id,
            output,
            passphrase_env,
            identity_file,
        } => package(config, id, output, passphrase_env, identity_file).await,
        Command::Key {
            cmd: KeyCmd::Rotate { json },
        } => key_rotate(config, json).await,
        Command::Check { json } => check(config, json).await,
        Command::Request { kind } => {
            let (kind, args) = match kind {
                RequestCmd::Erase(a) => (RequestKind::Erasure, a),
                RequestCmd::Export(a) => (RequestKind::Export, a),
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
                    },
                )
                .await?;
            let steps = e.store.steps(&sub.request.id).await?;
            let view = RequestView::new(&sub.request, Some(&steps), Utc::now());
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                if !sub.created {
                    println!("(already filed with this external id)");
                }
                print!("{}", view.to_text());
                println!(
                    "\nnext: `lethe run --until-idle` (or a running `lethe daemon`) carries it out"
                );
            }
            Ok(0)
        }
        Command::Status { id, json } => {
            let store = open_store(&config).await?;
            let req = store
                .get_request(&id)
                .await?
                .ok_or_else(|| BadInput(format!("no request with id `{id}`")))?;
            let steps = store.steps(&req.id).await?;
            let view = RequestView::new(&req, Some(&steps), Utc::now());
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                print!("{}", view.to_text());
            }
            Ok(if req.status == RequestStatus::Failed {
                1
            } else {
                0
            })
        }
        Command::List {
            status,
            overdue,
            json,
        } => {
            let status = status
                .map(|s| s.parse::<RequestStatus>())
                .transpose()
                .map_err(BadInput)?;
            let store = open_store(&config).await?;
            let now = Utc::now();
            let filter = RequestFilter {
                status,
                overdue_at: overdue.then(|| store::ms(now)),
                ..Default::default()
            };
            let rows = store.list_requests(&filter).await?;
            let views: Vec<RequestView> = rows
                .iter()
                .map(|r| RequestView::new(r, None, now))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&views)?);
            } else {
                println!(
                    "{:<36}  {:<8}  {:<26}  {:<10}  {:>9}  SUBJECT",
                    "ID", "KIND", "STATUS", "DUE", "DAYS LEFT"
                );
                for v in &views {
                    println!(
                        "{:<36}  {:<8}  {:<26}  {:<10}  {:>9}  {}",
                        v.id,
                        v.kind,
                        v.status,
                        &v.due_at[..10],
                        if v.status == "completed" {
                            "-".to_string()
                        } else {
                            v.days_left.to_string()
                        },
                        v.subject
                    );
                }
            }
            Ok(0)
        }
        Command::Run { until_idle } => {
            let e = engine(config).await?;
            let summary = if until_idle {
                e.run_until_idle().await?
            } else {
                e.run(shutdown_signal()).await?
            };
            eprintln!(
                "processed {} step(s); {} expired lease(s) released",
                summary.processed, summary.released
            );
            Ok(0)
        }
        Command::Daemon => daemon(config).await,
        Command::Retry { id, processor } => {
            let e = engine(config).await?;
            let n = e.retry(&id, processor.as_deref()).await?;
            if n == 0 {
                println!(
                    "nothing to retry: no failed step{}",
                    processor.map(|p| format!(" at `{p}`")).unwrap_or_default()
                );
            } else {
                println!("{n} step(s) back to pending; `lethe run --until-idle` or the daemon picks them up");
            }
            Ok(0)
        }
        Command::Cancel { id } => {
            let e = engine(config).await?;
            let st = e.cancel(&id).await?;
            println!("request {id}: {st}");
            Ok(0)
        }
        Command::Extend { id, reason } => {
            let e = engine(config).await?;
            let req = e.extend(&id, &reason).await?;
            println!(
                "request {id}: due {} (extended once: {reason})",
                store::from_ms(req.due_at).to_rfc3339()
            );
            Ok(0)
        }
        Command::Hold { cmd } => hold(config, cmd).await,
        Command::Confirm {
            id,
            processor,
            note,
        } => {
            let e = engine(config).await?;
            let st = e.confirm(&id, &processor, note.as_deref()).await?;
            println!("request {id}: `{processor}` confirmed; request is {st}");
            Ok(0)
        }
        Command::Intake {
            cmd: IntakeCmd::Key { json },
        } => {
            use base64::Engine as _;
            let key = crate::intake::callback_key(&config)?;
            let public =
                base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
            if json {
                let v = serde_json::json!({
                    "algorithm": "ed25519",
                    "public_key": public,
                    "header": "Lethe-Signature: t=<unix>,ed25519=<hex signature of \"<t>.<raw body>\">",
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{public}");
            }
            Ok(0)
        }
        Command::Audit {
            cmd: AuditCmd::Verify { json },
        } => {
            let store = open_store(&config).await?;
            let v = crate::audit::verify(store.as_ref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if let Some(b) = &v.broken {
                println!(
                    "BROKEN at event #{}: {} ({} events before it verified)",
                    b.seq, b.reason, v.checked
                );
            } else {
                println!(
                    "ok: {} events verified; head {}",
                    v.checked,
                    v.head.as_deref().unwrap_or("(empty)")
                );
            }
            Ok(if v.broken.is_some() { 1 } else { 0 })
        }
    }
}

/// Parse `--until`: an RFC 3339 time, or a duration from now.
fn parse_until(s: &str) -> Result<i64, BadInput> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let d = crate::domain::HumanDuration::parse(s)
        .map_err(|_| BadInput(format!("--until `{s}` is neither an RFC 3339 time (2027-01-31T00:00:00Z) nor a duration (\"30d\")")))?;
    Ok(store::ms(Utc::now()).saturating_add(d.get().as_millis() as i64))
}

fn hold_json(h: &crate::store::HoldRow) -> serde_json::Value {
    let ts = store::rfc3339;
    serde_json::json!({
        "id": h.id,
        "subject": h.subject_masked,
        "basis": h.basis,
        "until": h.until_at.map(ts),
        "processor": h.processor,
        "created_at": ts(h.created_at),
        "released_at": h.released_at.map(ts),
    })
}

async fn hold(config: Config, cmd: HoldCmd) -> anyhow::Result<u8> {
    match cmd {
        HoldCmd::Add {
            email,
            phone,
            customer_id,
            basis,
            until,
            processor,
            json,
        } => {
            let subject = subject_from_flags(
                email.as_deref(),
                phone.as_deref(),
                customer_id.as_deref(),
                None,
            )?;
            let until = until.as_deref().map(parse_until).transpose()?;
            let e = engine(config).await?;
            let h = e
                .add_hold(&subject, &basis, until, processor.as_deref())
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hold_json(&h))?);
            } else {
                println!(
                    "hold {} on {}: {} (until {})",
                    h.id,
                    h.subject_masked,
                    h.basis,
                    hold_json(&h)["until"].as_str().unwrap_or("released")
                );
            }
            Ok(0)
        }
        HoldCmd::Release { id } => {
            let e = engine(config).await?;
            let h = e.release_hold(&id).await?;
            println!(
                "hold {} on {} released; held erasures run now unless another hold applies",
                h.id, h.subject_masked
            );
            Ok(0)
        }
        HoldCmd::List { all, json } => {
            let store = open_store(&config).await?;
            let holds = store.list_holds(all).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&holds.iter().map(hold_json).collect::<Vec<_>>())?
                );
            } else {
                println!("{:<36}  {:<24}  {:<24}  BASIS", "ID", "SUBJECT", "UNTIL");
                for h in &holds {
                    let v = hold_json(h);
                    println!(
                        "{:<36}  {:<24}  {:<24}  {}",
                        h.id,
                        h.subject_masked,
                        v["until"].as_str().unwrap_or("until released"),
                        h.basis
                    );
                }
            }
            Ok(0)
        }
    }
}

/// A period bound: `YYYY-MM-DD` (midnight UTC; for the end, the next midnight,
/// so the day is included) or an RFC 3339 time.
fn period_bound(flag: &str, v: &str, end: bool) -> Result<store::Millis, BadInput> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        let d = if end { d.succ_opt().unwrap_or(d) } else { d };
        return Ok(store::ms(d.and_time(chrono::NaiveTime::MIN).and_utc()));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| store::ms(t.with_timezone(&Utc)))
        .map_err(|_| {
            BadInput(format!(
                "--{flag} `{v}`: expected a date (2026-11-01) or an RFC 3339 time (2026-11-01T00:00:00Z)"
            ))
        })
}

/// Write to `-o FILE` (atomically: a temporary sibling renamed into place) or stdout.
fn emit(output: Option<&std::path::Path>, text: &str) -> anyhow::Result<()> {
    match output {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(path) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "report".into());
            let tmp = path.with_file_name(format!(".{name}.tmp"));
            std::fs::write(&tmp, text).with_context(|| format!("writing {}", path.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
    }
}

/// `lethe daemon`: the worker, and with an `[intake]` section the HTTP
/// intake and the callback outbox. One SIGTERM stops all three: the server
/// stops accepting and finishes in-flight calls, the worker stops claiming and
/// finishes in-flight steps (writing their results, which releases their
/// leases), the outbox finishes the delivery in flight.
async fn daemon(config: Config) -> anyhow::Result<u8> {
    // Secrets and the listening socket first: a misconfigured daemon exits before it works.
    let secrets = if config.intake_enabled {
        Some(Arc::new(crate::intake::Secrets::from_env(&config)?))
    } else {
        None
    };
    let e = engine(config).await?;
    let listener = match &secrets {
        Some(_) => Some(
            tokio::net::TcpListener::bind(&e.config.intake.listen)
                .await
                .map_err(|err| {
                    BadInput(format!(
                        "{}: `intake.listen`: cannot listen on {}: {err}",
                        e.config.path.display(),
                        e.config.intake.listen
                    ))
                })?,
        ),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let on_signal = Arc::clone(&stop_tx);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = on_signal.send(true);
    });
    let mut background = tokio::task::JoinSet::new();
    if let (Some(secrets), Some(listener)) = (secrets, listener) {
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(listen = %addr, "HTTP intake listening");
        let state = crate::intake::AppState {
            engine: Arc::clone(&e),
            secrets: Arc::clone(&secrets),
        };
        let stop = stopped();
        background.spawn(async move {
            if let Err(err) = crate::intake::serve(listener, state, stop).await {
                tracing::error!(error = %err, "HTTP intake stopped with an error");
            }
            tracing::info!("HTTP intake stopped");
        });
        background.spawn(crate::intake::outbox::run(
            Arc::clone(&e),
            secrets,
            stopped(),
        ));
    } else {
        tracing::info!("no [intake] section in the config: HTTP intake off");
    }
    tracing::info!(worker = e.worker_id(), "daemon started");
    let summary = e.run(stopped()).await;
    // The worker stops on a signal, or on a store error: either way, stop the rest.
    let _ = stop_tx.send(true);
    while background.join_next().await.is_some() {}
    let summary = summary?;
    tracing::info!(processed = summary.processed, "daemon stopped");
    Ok(0)
}

async fn report(
    config: Config,
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    format: crate::report::Format,
    output: Option<PathBuf>,
) -> anyhow::Result<u8> {
    use crate::report::{self as rep, Format};
    let now = store::ms(Utc::now());
    if let Some(id) = id {
        if format == Format::Csv {
            return Err(BadInput(
                "--format csv is for period reports (--from/--to); a certificate is text, json or html".into(),
            )
            .into());
        }
        let store = open_store(&config).await?;
        let cert = rep::certificate::build(store.as_ref(), &id, now)
            .await?
            .ok_or_else(|| BadInput(format!("no request with id `{id}`")))?;
        let text = match format {
            Format::Text => rep::certificate::to_text(&cert),
            Format::Json => serde_json::to_string_pretty(&cert)? + "\n",
            Format::Html => rep::html::certificate(&cert).context("rendering the certificate")?,
            Format::Csv => unreachable!("refused above"),
        };
        emit(output.as_deref(), &text)?;
        if !cert.audit.chain_verified {
            eprintln!(
                "warning: the audit chain is broken at event #{}: run `lethe audit verify`",
                cert.audit.broken_at.unwrap_or(0)
            );
            return Ok(1);
        }
        return Ok(0);
    }
    let (Some(f), Some(t)) = (from, to) else {
        return Err(BadInput(
            "give a request id (its certificate), or --from DATE --to DATE (a period report)"
                .into(),
        )
        .into());
    };
    let from = period_bound("from", &f, false)?;
    let to = period_bound("to", &t, true)?;
    if from >= to {
        return Err(BadInput(format!("--from `{f}` is not before --to `{t}`")).into());
    }
    let store = open_store(&config).await?;
    let r = rep::period::build(store.as_ref(), from, to, now).await?;
    let text = match format {
        Format::Text => rep::period::to_text(&r),
        Format::Json => serde_json::to_string_pretty(&r)? + "\n",
        Format::Csv => rep::csv::period(&r),
        Format::Html => rep::html::period(&r).context("rendering the period report")?,
    };
    emit(output.as_deref(), &text)?;
    Ok(0)
}

async fn package(
    config: Config,
    id: String,
    output: Option<PathBuf>,
    passphrase_env: Option<String>,
    identity_file: Option<PathBuf>,
) -> anyhow::Result<u8> {
    use crate::report::package::{self, PackageError};
    let identities = match &identity_file {
        Some(f) => package::read_identity_file(f).map_err(|e| BadInput(e.to_string()))?,
        None => vec![],
    };
    // Read the passphrase before anything is written: a missing one is bad input.
    let passphrase = match &passphrase_env {
        Some(var) => match std::env::var(var) {
            Ok(p) if !p.is_empty() => Some(p),
            _ => {
                return Err(BadInput(format!(
                    "--passphrase-env {var}: the environment variable {var} is not set or empty"
                ))
                .into())
            }
        },
        None => None,
    };
    let base = output.unwrap_or_else(|| PathBuf::from(format!("lethe-export-{id}")));
    let store = open_store(&config).await?;
    let pkg = package::build(
        store.as_ref(),
        &config.export_dir,
        &id,
        store::ms(Utc::now()),
        &identities,
        config.store.export_retention.get(),
    )
    .await
    .map_err(|e| match e {
        PackageError::NoRequest(_)
        | PackageError::NotExport(_)
        | PackageError::NeedIdentity(_)
        | PackageError::BadIdentity(_)
        | PackageError::Deleted { .. } => anyhow::Error::new(BadInput(e.to_string())),
        PackageError::Store(s) => anyhow::Error::new(s),
        other => anyhow::Error::new(other),
    })?;
    let with_ext = |ext: &str| {
        let mut s = base.clone().into_os_string();
        s.push(ext);
        PathBuf::from(s)
    };
    let zip = pkg.zip()?;
    let written = match passphrase {
        Some(p) => {
            let path = with_ext(".zip.age");
            package::write_new_file(&path, &package::encrypt(&zip, &p)?)?;
            vec![path]
        }
        None => {
            let zpath = with_ext(".zip");
            if zpath.exists() {
                return Err(BadInput(format!(
                    "{} already exists: remove it or choose another -o",
                    zpath.display()
                ))
                .into());
            }
            pkg.write_dir(&base)?;
            package::write_new_file(&zpath, &zip)?;
            vec![base.clone(), zpath]
        }
    };
    let m = &pkg.manifest;
    println!(
        "export package for request {} ({})",
        m.request.id, m.request.subject
    );
    for p in &m.processors {
        println!("  {:<18} {}", p.processor, p.summary);
    }
    for w in &written {
        println!("wrote {}", w.display());
    }
    if !m.request.status.starts_with("completed") {
        eprintln!(
            "warning: request status is {}: the package holds only what was collected so far",
            m.request.status
        );
    }
    Ok(0)
}

async fn check(config: Config, json: bool) -> anyhow::Result<u8> {
    // Config, connectors and workflows were validated by loading. Now reach each processor.
    let store = open_store(&config).await;
    let store_ok = store.as_ref().map(|_| ()).map_err(|e| format!("{e:#}"));
    let keys = Keys::from_env(&config.store.key_env)
        .map(|_| ())
        .map_err(|e| e.to_string());
    let store_arc: Arc<dyn Store> = match store {
        Ok(s) => s,
        Err(e) => return Err(e),
    };
    let e = Engine::new(
        Arc::new(config),
        store_arc,
        Keys::from_base64("check", &Keys::generate_base64())?,
    )?;
    let results = e.check().await;
    let ok = results.iter().all(|(_, r)| r.is_ok()) && keys.is_ok() && store_ok.is_ok();
    if json {
        let v = serde_json::json!({
            "ok": ok,
            "store": store_ok.as_ref().err(),
            "key": keys.as_ref().err(),
            "processors": results.iter().map(|(name, r)| match r {
                Ok(ev) => serde_json::json!({"processor": name, "ok": true, "status": ev.status}),
                Err(e) => serde_json::json!({"processor": name, "ok": false, "error_class": e.class.as_str(), "error": e.message, "status": e.status}),
            }).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("config ok: {}", e.config.path.display());
        println!("store ok");
        match &keys {
            Ok(()) => println!("identity key ok ({})", e.config.store.key_env),
            Err(m) => println!("identity key: {m}"),
        }
        for (name, r) in &results {
            match r {
                Ok(ev) => println!("{name:<18} ok (HTTP {})", ev.status.unwrap_or(0)),
                Err(err) => println!("{name:<18} {}: {}", err.class.as_str(), err.message),
            }
        }
    }
    Ok(if ok { 0 } else { 1 })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
