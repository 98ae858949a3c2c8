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
        /// Several collectors sharing one database: repeat it, or separate them with commas.
        #[arg(long, required = true, value_delimiter = ',')]
        collector: Vec<String>,
        /// The enrolment token (carries the collector CA's fingerprint, which is pinned).
        #[arg(long, env = "INVIGILATOR_TOKEN", hide_env_values = true)]
        token: String,
        #[command(flatten)]
        state: StateDir,
        /// Succeed without contacting the collector when this device is already enrolled (for
        /// installers: an upgrade must keep the agent's identity, and the token is single-use).
        #[arg(long)]
        keep_existing: bool,
    },
    /// Run the agent until SIGTERM (Ctrl-C on Windows).
    Run {
        #[command(flatten)]
        state: StateDir,
    },
    /// Run as the Windows service (the service control manager starts this; use `run` at a
    /// prompt). Logs go to agent.log in the state directory.
    #[cfg(windows)]
    #[command(hide = true)]
    Service {
        #[command(flatten)]
        state: StateDir,
    },
    /// Note that an upgrade is under way, so the old version's uninstall keeps the state
    /// directory (run by the MSI before it removes the old version).
    #[command(hide = true)]
    MarkUpgrade {
        #[command(flatten)]
        state: StateDir,
    },
    /// Relay between a browser's extension (stdin/stdout, native messaging) and the running
    /// agent's local socket. Browsers start this themselves, as the user, from the host
    /// manifest that names `uk.invigilator.agent`; it is never run by hand.
    #[command(hide = true)]
    NativeHost {
        /// What the browser passes: the extension's origin, or Firefox's manifest path and id.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        _browser_args: Vec<String>,
    },
    /// Delete the state directory: key, certificates, settings and undelivered events. Run by the
    /// uninstaller, after the agent has stopped; the collector keeps what it already received.
    Forget {
        #[command(flatten)]
        state: StateDir,
    },
}

/// `--state-dir`, the same for every command.
#[derive(clap::Args)]
struct StateDir {
    /// Where the agent keeps its key, certificates, settings and spool (on Windows, default
    /// %ProgramData%\Invigilator).
    #[cfg_attr(not(windows), arg(long))]
    #[cfg_attr(windows, arg(long, default_value_os_t = invigilator_agent::platform::default_state_dir()))]
    state_dir: PathBuf,
}

/// A service's log file is kept to two files of this size (agent.log, agent.log.1).
#[cfg(windows)]
const SERVICE_LOG_MAX_BYTES: u64 = 10 * 1024 * 1024;

fn main() -> std::process::ExitCode {
    // A browser starts its native-messaging host with arguments of its own, not a subcommand.
    let args: Vec<_> = std::env::args_os().collect();
    if invigilator_agent::native_host::invoked_by_browser(&args) {
        return native_host();
    }
    let cli = Cli::parse();
    if let Command::NativeHost { .. } = cli.command {
        return native_host();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("INVIGILATOR_LOG")
        .unwrap_or_else(|_| "info".into());
    #[cfg(windows)]
    if let Command::Service {
        state: StateDir { state_dir },
    } = cli.command
    {
        use invigilator_agent::service;
        match service::log_file(&state_dir, SERVICE_LOG_MAX_BYTES) {
            Ok(file) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .init(),
            // Not enrolled (no state directory): the SCM's own error is all there is.
            Err(_) => tracing_subscriber::fmt().with_env_filter(filter).init(),
        }
        return match service::run(state_dir) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
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
                        state: StateDir { state_dir },
                        keep_existing,
                    } => {
                        if keep_existing
                            && let Some(e) = invigilator_agent::enroll::existing(&state_dir)?
                        {
                            println!(
                                "already enrolled as agent {} in group {}; kept",
                                e.agent_id, e.group
                            );
                            return Ok(());
                        }
                        let collector = invigilator_agent::dial::Collectors::new(collector)?;
                        let e =
                            invigilator_agent::enroll::run(&collector, &token, &state_dir).await?;
                        println!("enrolled as agent {} in group {}", e.agent_id, e.group);
                        Ok(())
                    }
                    Command::Run {
                        state: StateDir { state_dir },
                    } => invigilator_agent::run::run(&state_dir).await,
                    #[cfg(windows)]
                    Command::Service { .. } => unreachable!("handled before the runtime starts"),
                    Command::NativeHost { .. } => unreachable!("handled before the runtime starts"),
                    Command::MarkUpgrade {
                        state: StateDir { state_dir },
                    } => invigilator_agent::enroll::mark_upgrade(&state_dir),
                    Command::Forget {
                        state: StateDir { state_dir },
                    } => {
                        use invigilator_agent::enroll::Forgot;
                        let shown = state_dir.display();
                        match invigilator_agent::enroll::forget(&state_dir)? {
                            Forgot::Removed => println!("removed {shown}"),
                            Forgot::Absent => println!("{shown} does not exist: nothing to remove"),
                            Forgot::KeptForUpgrade => {
                                println!("kept {shown}: an upgrade is under way")
                            }
                        }
                        Ok(())
                    }
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

/// The native-messaging host: no runtime, no logging set-up (stdout belongs to the browser).
fn native_host() -> std::process::ExitCode {
    match invigilator_agent::native_host::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("invigilator native host: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
