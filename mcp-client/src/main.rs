//! `mcp-client`: see the crate docs and `mcp-client --help`.

fn main() -> std::process::ExitCode {
    mcp_client::cli::main()
}
