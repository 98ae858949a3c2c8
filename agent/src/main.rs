//! `invigilator-agent`: see `--help`, and DESIGN.md for the contract these commands keep.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "invigilator-agent",
    version,
    about = "Invigilator endpoint agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enrol this device with a collector, using a token from `invigilator-collector token create`.
    Enroll {
        /// The collector, as https://HOST:PORT (HOST must be one of its certificate's names).
        #[arg(long)]
        collector: String,
        /// The enrolment token (carries the collector CA's fingerprint, which is pinned).
        #[arg(long, env = "INVIGILATOR_TOKEN", hide_env_values = true)]
        token: String,
        /// Where the agent keeps its key, certificates, settings and spool (on Windows, default
        /// %ProgramData%\Invigilator).
        #[cfg_attr(not(windows), arg(long))]
        #[cfg_attr(windows, arg(long, default_value_os_t = invigilator_agent::platform::default_state_dir()))]
        state_dir: PathBuf,
    },
    /// Run the agent until SIGTERM (Ctrl-C on Windows).
    Run {
        /// As given to `enroll` (on Windows, default %ProgramData%\Invigilator).
        #[cfg_attr(not(windows), arg(long))]
        #[cfg_attr(windows, arg(long, default_value_os_t = invigilator_agent::platform::default_state_dir()))]
        state_dir: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INVIGILATOR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal; journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One small thread pool: the heavy lifting (netlink, spool writes) has threads of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime
        .context("starting the async runtime")
        .and_then(|rt| {
            rt.block_on(async {
                match cli.command {
                    Command::Enroll {
                        collector,
                        token,
                        state_dir,
                    } => {
                        let e =
                            invigilator_agent::enroll::run(&collector, &token, &state_dir).await?;
                        println!("enrolled as agent {} in group {}", e.agent_id, e.group);
                        Ok(())
                    }
                    Command::Run { state_dir } => invigilator_agent::run::run(&state_dir).await,
                }
            })
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
