//! The command line. Parses arguments, loads and validates everything *before*
//! touching the store (so bad input writes nothing), runs the verb, and maps
//! errors to the documented exit codes: 0 ok; 1 something needs attention;
//! 2 bad input or config; 3 store or network unavailable.
//!
//! One file per command or command group (as tokio's mini-redis does with
//! `cmd/`): this file holds the clap types, the exit-code mapping, `main` and
//! the dispatch, which only matches and calls; `helpers` holds what several
//! commands share.

mod audit;
mod check;
mod daemon;
mod dashboard;
mod helpers;
mod hold;
mod init;
mod intake;
mod key;
mod lifecycle;
mod list;
mod package;
mod report;
mod request;
mod run;
mod schedule;
mod status;
mod suppress;

pub use audit::AuditCmd;
pub use dashboard::DashboardCmd;
pub use helpers::{shutdown_signal, subject_from_flags};
pub use hold::HoldCmd;
pub use intake::IntakeCmd;
pub use key::KeyCmd;
pub use request::{RequestArgs, RequestCmd};
pub use schedule::ScheduleCmd;

use crate::config::{Config, ConfigError};
use crate::crypto::CryptoError;
use crate::domain::IdentityError;
use crate::engine::EngineError;
use crate::store::StoreError;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// The longest wait for each processor's answer.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        timeout: std::time::Duration,
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
    /// Process due steps (exit 1 when a step failed in this run).
    Run {
        /// Process everything due now, then exit.
        #[arg(long)]
        until_idle: bool,
        /// With --until-idle: also wait for steps that fall due within this long
        /// of the start ("90s", "5m"); default 0: end as soon as only back-offs,
        /// windows, holds and confirmations remain.
        #[arg(long, value_parser = run::parse_max_wait, requires = "until_idle")]
        max_wait: Option<std::time::Duration>,
        /// One JSON object per finished request, then a summary object.
        #[arg(long)]
        json: bool,
    },
    /// Worker, HTTP intake (when lethe.toml has `[intake]`) and callback delivery, until SIGTERM.
    Daemon,
    /// Failed steps back to pending (fresh attempts; audited).
    Retry {
        /// Request id.
        id: String,
        /// Only this processor.
        #[arg(long)]
        processor: Option<String>,
    },
    /// Give up on a failed step: it becomes `skipped` (final; audited), later
    /// phases go on, and the certificate shows it as skipped by the operator
    /// with the reason — never as erased.
    Skip {
        /// Request id.
        id: String,
        /// The processor whose failed step is given up.
        #[arg(long)]
        processor: String,
        /// Why (kept as evidence and shown on the certificate; identities in it are masked).
        #[arg(long)]
        reason: String,
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
    /// Mark an unverified request verified: its steps may then call processors.
    Verify {
        /// Request id.
        id: String,
        /// How the subject's identity was verified ("email link", "id document"…).
        #[arg(long)]
        method: String,
        /// A note kept in the audit event.
        #[arg(long)]
        note: Option<String>,
    },
    /// The suppression list: keyed hashes of erased identities (never the identities).
    Suppression {
        /// What to do.
        #[command(subcommand)]
        cmd: suppress::SuppressionCmd,
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
    /// A request's certificate (`report ID`), a period report (`report --from D --to D`),
    /// or a retention sweep run's certificate (`report sweep RUN_ID`).
    Report {
        /// Request id: its certificate (or `sweep`, then RUN_ID). Omit, and give --from and --to, for a period report.
        id: Option<String>,
        /// With `sweep`: the sweep run's id (from `lethe schedule run` or `schedule list`).
        run_id: Option<String>,
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
    /// The web dashboard (`/dashboard`, served by `lethe daemon` with `[intake]`).
    Dashboard {
        /// What to do.
        #[command(subcommand)]
        cmd: DashboardCmd,
    },
    /// Retention schedules (`[[schedule]]` in workflows): list them, or run one now.
    Schedule {
        /// What to do.
        #[command(subcommand)]
        cmd: ScheduleCmd,
    },
    /// Master keys of the identities at rest.
    Key {
        /// What to do.
        #[command(subcommand)]
        cmd: KeyCmd,
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
            || cause.is::<crate::audit::SigningKeyError>()
            || cause.is::<BadInput>()
        {
            return 2;
        }
        // A store error is never the input's fault: 3 when the store is
        // unreachable (try again later), else 1 — never 2.
        if let Some(s) = cause.downcast_ref::<StoreError>() {
            return if s.is_unavailable() { 3 } else { 1 };
        }
        if let Some(en) = cause.downcast_ref::<EngineError>() {
            return match en {
                EngineError::Store(s) if s.is_unavailable() => 3,
                EngineError::Store(_) | EngineError::Internal(_) => 1,
                EngineError::Invalid(_)
                | EngineError::NoRequest(_)
                | EngineError::ExternalIdConflict(_) => 2,
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
    crate::term::exit_quietly_on_broken_pipe();
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
        .with_ansi(crate::term::colour_stderr())
        .try_init();
}

/// Run a parsed command; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Init { force } = &cli.command {
        return init::init(&cli, *force);
    }
    if let Command::Demo = &cli.command {
        return crate::demo::run().await;
    }
    if let Command::Dashboard {
        cmd: DashboardCmd::HashPassword,
    } = &cli.command
    {
        return dashboard::hash_password();
    }
    if let Command::Audit {
        cmd:
            AuditCmd::Verify {
                json,
                certificate: Some(file),
                public_key,
            },
    } = &cli.command
    {
        // Offline: the config (for its keys) only if no key is given and it loads.
        let config = if public_key.is_empty() {
            Config::load(&cli.config).ok()
        } else {
            None
        };
        return audit::verify_certificate(file, public_key, config.as_ref(), *json).await;
    }
    let config = Config::load(&cli.config)?;
    if reads_an_existing_store(&cli.command) {
        config.require_existing_store()?;
    }
    match cli.command {
        Command::Init { .. } | Command::Demo | Command::Dashboard { .. } => {
            unreachable!("handled above")
        }
        Command::Report {
            id,
            run_id,
            from,
            to,
            format,
            output,
        } => {
            if id.as_deref() == Some("sweep") || run_id.is_some() {
                return schedule::report_sweep(config, id, run_id, format, output).await;
            }
            report::report(config, id, from, to, format, output).await
        }
        Command::Schedule { cmd } => schedule::schedule(config, cmd).await,
        Command::Package {
            id,
            output,
            passphrase_env,
            identity_file,
        } => package::package(config, id, output, passphrase_env, identity_file).await,
        Command::Key {
            cmd: KeyCmd::Rotate { json },
        } => key::key_rotate(config, json).await,
        Command::Check { json, timeout } => check::check(config, json, timeout).await,
        Command::Request { kind } => request::request(config, kind).await,
        Command::Status { id, json } => status::status(config, id, json).await,
        Command::List {
            status,
            overdue,
            json,
        } => list::list(config, status, overdue, json).await,
        Command::Run {
            until_idle,
            max_wait,
            json,
        } => run::run(config, until_idle, max_wait, json).await,
        Command::Daemon => daemon::daemon(config).await,
        Command::Retry { id, processor } => lifecycle::retry(config, id, processor).await,
        Command::Skip {
            id,
            processor,
            reason,
        } => lifecycle::skip(config, id, processor, reason).await,
        Command::Cancel { id } => lifecycle::cancel(config, id).await,
        Command::Extend { id, reason } => lifecycle::extend(config, id, reason).await,
        Command::Hold { cmd } => hold::hold(config, cmd).await,
        Command::Confirm {
            id,
            processor,
            note,
        } => lifecycle::confirm(config, id, processor, note).await,
        Command::Intake {
            cmd: IntakeCmd::Key { json },
        } => intake::key(config, json).await,
        Command::Audit {
            cmd: AuditCmd::Verify {
                json, public_key, ..
            },
        } => audit::verify(config, json, public_key).await,
        Command::Audit {
            cmd: AuditCmd::Key { json },
        } => audit::key(config, json).await,
        Command::Verify { id, method, note } => suppress::verify(config, id, method, note).await,
        Command::Suppression { cmd } => suppress::suppression(config, cmd).await,
    }
}

/// A human duration flag (`10s`, `500ms`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    crate::domain::HumanDuration::parse(s)
        .map(|d| d.get())
        .map_err(|e| e.to_string())
}

/// Commands that only read, or act on what exists: against a SQLite file
/// that does not exist they fail (exit 2) instead of creating an empty one.
fn reads_an_existing_store(c: &Command) -> bool {
    !matches!(
        c,
        Command::Init { .. }
            | Command::Demo
            | Command::Check { .. }
            | Command::Request { .. }
            | Command::Run { .. }
            | Command::Schedule { .. }
            | Command::Daemon
            | Command::Intake { .. }
            | Command::Audit {
                cmd: AuditCmd::Key { .. }
            }
            | Command::Hold {
                cmd: HoldCmd::Add { .. }
            }
    )
}
