//! `lethe intake key`: prints the Ed25519 public key that status-callback
//! receivers pin. Needs only the config and the signing key's environment
//! variable, never the store.

use crate::config::Config;
use clap::Subcommand;

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

/// `lethe intake key [--json]`.
pub(super) async fn key(config: Config, json: bool) -> anyhow::Result<u8> {
    use base64::Engine as _;
    let key = crate::intake::callback_key(&config)?;
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
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
