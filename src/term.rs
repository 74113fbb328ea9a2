//! How the binary behaves towards the terminal and pipes it writes to:
//! colour only on a terminal (and never with `NO_COLOR`), and a reader that
//! went away (`lethe list | head`) ends the program quietly instead of with a
//! panic.

use std::io::IsTerminal;

/// Whether log lines on stderr may carry ANSI colour codes: only when stderr
/// is a terminal and `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colour_stderr() -> bool {
    colour_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

/// The rule behind [`colour_stderr`], for a given terminal-ness and `NO_COLOR` value.
pub fn colour_allowed(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Whether a panic message is the standard library's report of a write to a
/// closed stdout or stderr (`failed printing to stdout: Broken pipe`).
pub fn is_broken_pipe_panic(message: &str) -> bool {
    message.starts_with("failed printing to std") && message.contains("Broken pipe")
}

/// Install a panic hook under which a write to a closed pipe ends the process
/// at once with exit code 0 and no message (the reader stopped reading, as
/// `head` does); every other panic is reported as before.
pub fn exit_quietly_on_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_pipe_panic(message) {
            std::process::exit(0);
        }
        previous(info);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some(OsStr::new(""))));
        assert!(!colour_allowed(true, Some(OsStr::new("1"))));
        assert!(!colour_allowed(false, None));
    }

    #[test]
    fn only_the_broken_pipe_message_is_recognised() {
        assert!(is_broken_pipe_panic(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_broken_pipe_panic("index out of bounds"));
        assert!(!is_broken_pipe_panic(
            "failed printing to stdout: No space left on device"
        ));
    }
}
