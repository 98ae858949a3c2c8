//! `invigilator-collector`: see `--help`, and DESIGN.md for the contract these commands keep.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use invigilator_collector::{cli, init, serve};
use invigilator_lists as lists;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "invigilator-collector",
    version,
    about = "Invigilator collector: enrolment, mTLS ingest, policy, alerts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct DataDir {
    /// The collector's data directory (database, PKI, configuration, policy).
    #[arg(long, env = "INVIGILATOR_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: CA, server certificate, database, default config and policy.
    Init {
        #[command(flatten)]
        dir: DataDir,
        /// DNS name or IP address agents will use to reach this collector (repeatable).
        /// Default: localhost, 127.0.0.1, ::1 and this machine's host name.
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// A PostgreSQL database for the store (postgres://user:password@host/db), instead of
        /// the embedded SQLite file: written to collector.toml's [store] url.
        #[arg(long = "store-url", env = "INVIGILATOR_STORE_URL")]
        store_url: Option<String>,
        /// Add a collector beside the one whose data directory this is (or a copy of it), on
        /// the PostgreSQL database they will share: its CA, configuration and lists are copied,
        /// and this collector gets its own server certificate for --server-name.
        #[arg(long, value_name = "DATA_DIR", conflicts_with = "store_url")]
        join: Option<PathBuf>,
    },
    /// Run the collector: gRPC ingest for agents and the HTTP console.
    Serve {
        #[command(flatten)]
        dir: DataDir,
        /// gRPC listen address (default from collector.toml: 0.0.0.0:50051).
        #[arg(long)]
        grpc_listen: Option<SocketAddr>,
        /// HTTP listen address (default from collector.toml: 127.0.0.1:8080).
        #[arg(long)]
        http_listen: Option<SocketAddr>,
    },
    /// Enrolment tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Certificates for devices that run no agent (Chromebooks): the extension sends visits
    /// to the collector itself with one (`[extension] listen`).
    DeviceCert {
        #[command(subcommand)]
        command: DeviceCertCommand,
    },
    /// Alerts raised by the policy.
    Alerts {
        #[command(subcommand)]
        command: ListCommand,
    },
    /// Stored events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Enrolled agents.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// The collectors sharing this collector's database, as JSON: each one's host, version,
    /// settings digest and policy, when it was last seen, and whether it differs from this
    /// data directory's (a configuration edited on one collector and not the others).
    Collectors {
        #[command(flatten)]
        dir: DataDir,
    },
    /// The Acceptable Use Policy file.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Category lists (UT1 / squidGuard format).
    Lists {
        #[command(subcommand)]
        command: ListsCommand,
    },
    /// The access audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Staff accounts for the console.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Retention periods ([retention] in collector.toml).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Subject access requests (UK GDPR Art. 15).
    Sar {
        #[command(subcommand)]
        command: SarCommand,
    },
    /// Pupils' and staff's groups from the MIS ([roster] in collector.toml).
    Roster {
        #[command(subcommand)]
        command: RosterCommand,
    },
    /// The store itself ([store] in collector.toml).
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Copy this data directory's SQLite store, ids and audit trail included, into a new,
    /// empty PostgreSQL database, and point collector.toml at it. Stop the collector first;
    /// the SQLite file is only read, and kept. Audited.
    Migrate {
        /// The school's data directory (its SQLite store); the collector goes on using it.
        #[arg(
            long = "data-dir",
            visible_alias = "from",
            env = "INVIGILATOR_DATA_DIR"
        )]
        data_dir: PathBuf,
        /// The PostgreSQL database (postgres://user:password@host/db, or key=value).
        #[arg(long)]
        to: String,
    },
}

#[derive(Subcommand)]
enum RosterCommand {
    /// Import a OneRoster 1.1 CSV export (a folder holding users.csv, and classes.csv with
    /// enrollments.csv) into the roster the policy names. All or nothing: a bad row stops it
    /// with its file and line. Audited.
    Import {
        #[command(flatten)]
        dir: DataDir,
        /// The folder holding the export.
        export: PathBuf,
        /// Show who would join, leave or change group, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Delete what is older than its retention period now (the server also does this on its
    /// own every `run_every`). Audited.
    Run {
        #[command(flatten)]
        dir: DataDir,
        /// Only count what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SarCommand {
    /// Export everything held about one user as JSON, for review before disclosure. Audited
    /// with the purpose.
    Export {
        #[command(flatten)]
        dir: DataDir,
        /// The account name exactly as the agents report it.
        #[arg(long)]
        user: String,
        /// Why the export is made (e.g. the request's reference); recorded in the audit trail.
        #[arg(long)]
        purpose: String,
        /// Write to this new file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ListFormat {
    /// A folder per category holding `domains`, `urls` and `expressions` (UT1, squidGuard).
    Ut1,
}

#[derive(Subcommand)]
enum ListsCommand {
    /// Validate and compile category lists into <data-dir>/lists/, replacing the previous lists
    /// of that class atomically (a failed import leaves them as they were).
    Import {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long, value_enum)]
        format: ListFormat,
        /// Licensed illegal-content feeds (IWF, CTIRU): stored apart, always on, and their
        /// alerts never show the URL.
        #[arg(long)]
        illegal: bool,
        /// The UT1 directory, or a .tar.gz of one.
        source: PathBuf,
    },
    /// Read URLs on stdin, one per line; print one line per URL: its category, or `-`.
    ///
    /// When several categories match, illegal ones come first, then the first in byte order
    /// of category name (squidGuard with its pass line in that order answers the same).
    /// A line that is not a URL prints `-`. Output is written in blocks, not line by line.
    Classify {
        /// Raw UT1 directory (compiled in memory), or compiled lists: a data directory, its
        /// `lists` folder, or one `.lists` file.
        #[arg(long)]
        lists: PathBuf,
        /// Worker threads (0: one per core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain: exit 0 if intact, otherwise name the first bad entry and exit 1.
    Verify {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Seal the trail as it stands into a new checkpoint (audit.head), when the checkpoint is
    /// missing, from an older version, or its seal does not verify. Refused when an entry itself
    /// is broken. Audited, with what verify said before.
    Anchor {
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create an account. Without --password-stdin a password is generated, printed once, and
    /// must be changed at first log-in.
    Add {
        #[command(flatten)]
        dir: DataDir,
        username: String,
        /// technician, dsl, leadership or governor.
        #[arg(long)]
        role: String,
        /// May manage accounts in the console.
        #[arg(long)]
        admin: bool,
        /// The person's e-mail: single sign-on (console.sso, match_email) signs them in to this
        /// account, with this role.
        #[arg(long, default_value = "")]
        email: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List accounts as JSON.
    List {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// Change an account's role, administrator right, or disable / enable it.
    Set {
        #[command(flatten)]
        dir: DataDir,
        username: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        admin: Option<bool>,
        #[arg(long)]
        disabled: Option<bool>,
    },
    /// Generate a new password (printed once; it unlocks a locked account).
    ResetPassword {
        #[command(flatten)]
        dir: DataDir,
        username: String,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create an enrolment token; prints the token alone on stdout.
    Create {
        #[command(flatten)]
        dir: DataDir,
        /// Group the enrolled devices join (e.g. pupils-ks2, staff, shared-ict-suite).
        #[arg(long)]
        group: String,
        /// How long the token can be used, e.g. 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How many devices may enrol with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
}

#[derive(Subcommand)]
enum ListCommand {
    /// List as JSON (all rows unless limited).
    List {
        #[command(flatten)]
        dir: DataDir,
        /// Print JSON (the only format for now; kept for the contract).
        #[arg(long)]
        json: bool,
        /// Only rows observed at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// List as JSON (all rows unless limited).
    List {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long)]
        json: bool,
        /// process, usb, session, browsing or gap.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        limit: Option<u64>,
    },
}

#[derive(Subcommand)]
enum DeviceCertCommand {
    /// Enrol a device by hand: make its key and certificate (a fresh agent id) and write them,
    /// with the CA certificate, as PEM files for the school's device management to install.
    Create {
        #[command(flatten)]
        dir: DataDir,
        /// The agent group the device belongs to (as an enrolment token's).
        #[arg(long)]
        group: String,
        /// The device's name, shown as its host name (e.g. its asset tag).
        #[arg(long)]
        name: String,
        /// How long the certificate is valid: the device cannot renew it by itself, so make a
        /// new one before then.
        #[arg(long, default_value = "365d", value_parser = humantime::parse_duration)]
        valid_for: std::time::Duration,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// List enrolled agents with their health, as JSON.
    List {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long)]
        json: bool,
    },
    /// Refuse this agent from now on (open streams are cut within seconds).
    Revoke {
        #[command(flatten)]
        dir: DataDir,
        agent_id: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file; errors name the line and the field. With --data-dir, also warns
    /// about categories no imported list provides.
    Check {
        file: PathBuf,
        /// A data directory whose imported lists the policy will run with.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Dry run: replay stored events against a candidate policy and show which alerts it would
    /// add, remove or change compared with the current one. Nothing is written.
    Test {
        #[command(flatten)]
        dir: DataDir,
        /// The candidate policy file.
        file: PathBuf,
        /// Replay only events observed since this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the keyword libraries on a labelled corpus (JSON lines: text, kind, label,
    /// lang): recall per concern and false positives on innocent text.
    Eval {
        /// The corpus, e.g. collector/policy/corpus/keywords.jsonl.
        corpus: PathBuf,
        /// The policy whose libraries to measure (default: the built-in default policy).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Also list every miss and false positive.
        #[arg(long)]
        mistakes: bool,
        /// Then scan the corpus this many times on one core and print texts per second.
        #[arg(long)]
        repeat: Option<u32>,
        /// The classifier's threshold to measure it at (cross-validated); repeat it to compare
        /// several in one run. Default: the policy's default, 0.98.
        #[arg(long = "threshold")]
        thresholds: Vec<f32>,
        /// The corpus is held out (the shipped classifier was never trained on it): measure
        /// everything as the collector runs it instead of cross-validating a classifier on it.
        #[arg(long)]
        held_out: bool,
    },
    /// Train the keyword classifier on labelled corpora and write it as a model file.
    Train {
        /// The corpora, read as one, e.g. collector/policy/corpus/keywords.jsonl
        /// collector/policy/corpus/train/*.jsonl.
        #[arg(required = true)]
        corpus: Vec<PathBuf>,
        /// Where to write the model.
        #[arg(long)]
        out: PathBuf,
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
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            dir,
            server_names,
            store_url,
            join,
        } => {
            let origin = match &join {
                Some(from) => init::Origin::Join { data_dir: from },
                None => init::Origin::New {
                    store_url: store_url.as_deref(),
                },
            };
            let done = init::run(&dir.data_dir, &server_names, origin)?;
            println!("initialised {}", dir.data_dir.display());
            println!("CA fingerprint (SHA-256): {}", done.ca_fingerprint);
            println!("server certificate names: {}", done.server_names.join(", "));
            if done.shared_database {
                println!(
                    "the database was initialised by another collector: its console accounts serve this one too"
                );
            } else {
                println!(
                    "console administrator: {} (role {}), first password in {} (change it at first log-in)",
                    done.admin_username,
                    done.admin_role,
                    done.admin_password_file.display()
                );
            }
            println!(
                "next: edit policy.toml and collector.toml there, then `invigilator-collector serve --data-dir {}`",
                dir.data_dir.display()
            );
            Ok(())
        }
        Command::Serve {
            dir,
            grpc_listen,
            http_listen,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?
            .block_on(serve::run(
                &dir.data_dir,
                serve::ServeOptions {
                    grpc_listen,
                    http_listen,
                },
            )),
        Command::Token {
            command:
                TokenCommand::Create {
                    dir,
                    group,
                    ttl,
                    uses,
                },
        } => {
            println!("{}", cli::token_create(&dir.data_dir, &group, ttl, uses)?);
            Ok(())
        }
        Command::Alerts {
            command:
                ListCommand::List {
                    dir,
                    json: _,
                    since,
                    limit,
                },
        } => cli::alerts_list(&dir.data_dir, since.as_deref(), limit),
        Command::Events {
            command:
                EventsCommand::List {
                    dir,
                    json: _,
                    kind,
                    since,
                    limit,
                },
        } => cli::events_list(&dir.data_dir, kind.as_deref(), since.as_deref(), limit),
        Command::Agents {
            command: AgentsCommand::List { dir, json: _ },
        } => cli::agents_list(&dir.data_dir),
        Command::Agents {
            command: AgentsCommand::Revoke { dir, agent_id },
        } => cli::agents_revoke(&dir.data_dir, &agent_id),
        Command::DeviceCert {
            command:
                DeviceCertCommand::Create {
                    dir,
                    group,
                    name,
                    valid_for,
                    out,
                },
        } => {
            let made = cli::device_cert_create(&dir.data_dir, &group, &name, valid_for, &out)?;
            println!("{}", made.agent_id);
            eprintln!(
                "device {name:?} enrolled as agent {}: certificate {}, key {}, CA {}.\n\
                 For Google Admin or a browser's certificate manager, make a PKCS#12 file:\n  \
                 openssl pkcs12 -export -in {} -inkey {} -out device.p12",
                made.agent_id,
                made.cert.display(),
                made.key.display(),
                made.ca.display(),
                made.cert.display(),
                made.key.display(),
            );
            Ok(())
        }
        Command::Collectors { dir } => cli::collectors_list(&dir.data_dir),
        Command::Policy {
            command: PolicyCommand::Check { file, data_dir },
        } => cli::policy_check(&file, data_dir.as_deref()),
        Command::Policy {
            command:
                PolicyCommand::Test {
                    dir,
                    file,
                    since,
                    json,
                },
        } => cli::policy_test(&dir.data_dir, &file, since.as_deref(), json),
        Command::Policy {
            command:
                PolicyCommand::Eval {
                    corpus,
                    policy,
                    mistakes,
                    repeat,
                    thresholds,
                    held_out,
                },
        } => cli::policy_eval(
            &corpus,
            policy.as_deref(),
            mistakes,
            repeat,
            &thresholds,
            held_out,
        ),
        Command::Policy {
            command: PolicyCommand::Train { corpus, out },
        } => cli::policy_train(&corpus, &out),
        Command::Lists { command } => lists_command(command),
        Command::Audit {
            command: AuditCommand::Verify { dir },
        } => {
            let entries = cli::audit_verify(&dir.data_dir)?;
            println!("audit trail intact: {entries} entries");
            Ok(())
        }
        Command::Audit {
            command: AuditCommand::Anchor { dir },
        } => {
            println!(
                "audit trail anchored: {}",
                cli::audit_anchor(&dir.data_dir)?
            );
            Ok(())
        }
        Command::Users { command } => users_command(command),
        Command::Retention {
            command: RetentionCommand::Run { dir, dry_run, json },
        } => cli::retention_run(&dir.data_dir, dry_run, json),
        Command::Store {
            command: StoreCommand::Migrate { data_dir, to },
        } => cli::store_migrate(&data_dir, &to),
        Command::Roster {
            command:
                RosterCommand::Import {
                    dir,
                    export,
                    dry_run,
                },
        } => cli::roster_import(&dir.data_dir, &export, dry_run),
        Command::Sar {
            command:
                SarCommand::Export {
                    dir,
                    user,
                    purpose,
                    out,
                },
        } => cli::sar_export(&dir.data_dir, &user, &purpose, out.as_deref()),
    }
}

fn users_command(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::Add {
            dir,
            username,
            role,
            admin,
            email,
            password_stdin,
        } => {
            if let Some(p) = cli::users_add(
                &dir.data_dir,
                &username,
                &role,
                admin,
                &email,
                password_stdin,
            )? {
                println!("{p}");
            }
            Ok(())
        }
        UsersCommand::List { dir, json: _ } => cli::users_list(&dir.data_dir),
        UsersCommand::Set {
            dir,
            username,
            role,
            admin,
            disabled,
        } => cli::users_set(&dir.data_dir, &username, role.as_deref(), admin, disabled),
        UsersCommand::ResetPassword { dir, username } => {
            println!("{}", cli::users_reset(&dir.data_dir, &username)?);
            Ok(())
        }
    }
}

fn lists_command(command: ListsCommand) -> anyhow::Result<()> {
    match command {
        ListsCommand::Import {
            dir,
            format: ListFormat::Ut1,
            illegal,
            source,
        } => {
            let class = if illegal {
                lists::ListClass::Illegal
            } else {
                lists::ListClass::Ordinary
            };
            let report = lists::import(&dir.data_dir, &source, class).with_context(|| {
                format!(
                    "importing {} (the previous lists are unchanged)",
                    source.display()
                )
            })?;
            print!("{report}");
            Ok(())
        }
        ListsCommand::Classify {
            lists: path,
            threads,
        } => {
            let loaded = lists::Lists::open(&path)
                .with_context(|| format!("loading lists from {}", path.display()))?;
            let stdin = std::io::stdin().lock();
            let stdout = std::io::BufWriter::with_capacity(256 << 10, std::io::stdout().lock());
            let stats = lists::classify::run(&loaded, stdin, stdout, threads)
                .context("classifying stdin")?;
            tracing::debug!(lines = stats.lines, matched = stats.matched, "classified");
            Ok(())
        }
    }
}
