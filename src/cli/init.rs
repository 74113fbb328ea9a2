//! `lethe init`: writes the example lethe.toml. Runs before any config is
//! loaded (there is none yet) and refuses to overwrite without `--force`.

use super::{BadInput, Cli};
use crate::config::EXAMPLE;
use anyhow::Context;

/// `lethe init [--force]`.
pub(super) fn init(cli: &Cli, force: bool) -> anyhow::Result<u8> {
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
    println!("next: export LETHE_KEY=\"$(openssl rand -base64 32)\" (keep it safe), set MAILCHIMP_API_KEY and the [intake] variables (or delete that section), then `lethe check`");
    Ok(0)
}
