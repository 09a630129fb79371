//! `mag-server`: see the crate docs and `mag-server --help`.

fn main() -> std::process::ExitCode {
    mag_server::cli::main()
}
