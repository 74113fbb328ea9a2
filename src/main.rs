//! The `lethe` binary: a thin shell over the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    lethe::cli::main()
}
