//! `lethe dashboard hash-password`: makes the Argon2 hash that `[dashboard]
//! password_hash` holds. Runs before any config is loaded (the hash is what
//! goes into it) and reads the password from standard input, never from an
//! argument (which `ps` and shell history would show).

use super::BadInput;
use anyhow::Context;
use clap::Subcommand;

/// `dashboard …`.
#[derive(Debug, Subcommand)]
pub enum DashboardCmd {
    /// Read a password from standard input (its first line) and print its
    /// Argon2 hash for `[dashboard] password_hash`.
    HashPassword,
}

/// `lethe dashboard hash-password`.
pub(super) fn hash_password() -> anyhow::Result<u8> {
    let mut line = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.chars().count() < 8 {
        return Err(BadInput(
            "the password (the first line of standard input) must have at least 8 characters"
                .into(),
        )
        .into());
    }
    let hash = crate::web::auth::hash_password(password).map_err(BadInput)?;
    println!("{hash}");
    Ok(0)
}
