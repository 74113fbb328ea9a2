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
    /// Worker (and, in a later version, HTTP intake) until SIGTERM.
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
    /// Phone number, E.164 (+44…).
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
                EngineError::Invalid(_) | EngineError::NoRequest(_) => 2,
                _ => 1,
            };
        }
    }
    1
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
    let keys = Keys::from_env(&config.store.key_env)?;
    let store = open_store(&config).await?;
    Ok(Engine::new(Arc::new(config), store, keys)?)
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
        Command::Check { json } => check(config, json).await,
        Command::Request { kind } => {
            let (kind, args) = match kind {
                RequestCmd::Erase(a) => (RequestKind::Erasure, a),
                RequestCmd::Export(a) => (RequestKind::Export, a),
            };
            // Validate everything before the store is opened: bad input writes nothing.
            let subject = Subject::parse(
                args.email.as_deref(),
                args.phone.as_deref(),
                args.customer_id.as_deref(),
                args.name.as_deref(),
            )?;
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
        Command::Daemon => {
            let e = engine(config).await?;
            tracing::info!(worker = e.worker_id(), "daemon started");
            let summary = e.run(shutdown_signal()).await?;
            tracing::info!(processed = summary.processed, "daemon stopped");
            Ok(0)
        }
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
