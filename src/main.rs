//! The `carapace` binary: `serve` runs the CRI daemon; `check` reports what on this node decides
//! whether pods will run; `image import` loads an image archive; `config default` prints the
//! default configuration. Later roles (the per-container monitor, the pod infra process) are re-execs of
//! this same binary, so a node installs one file.

mod authority;
mod check;
mod image;
mod memory;
mod notify;
mod serve;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The pod infra role: PID 1 of a pod's shared PID namespace, reaping zombies.
const INFRA_SUBCOMMAND: &str = "infra";

#[derive(Parser)]
#[command(
    name = "carapace",
    version,
    about = "A Kubernetes CRI runtime node agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CRI on the configured unix socket, and metrics over HTTP.
    Serve {
        /// The configuration file; when not given, /etc/carapace/config.toml if it exists.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Check this node before (or while) running pods: kernel features, cgroups, capabilities,
    /// networking, CNI, registries, storage, sockets. One line per check, status first (OK,
    /// WARN, FAIL), with what it means and how to fix it; exits 1 if any check FAILs.
    Check {
        /// The configuration file; when not given, /etc/carapace/config.toml if it exists.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print a JSON array of {check, status, found, meaning, fix} objects instead.
        #[arg(long)]
        json: bool,
        /// The kubelet's configuration file, to compare its cgroupDriver and
        /// containerRuntimeEndpoint; when not given, /var/lib/kubelet/config.yaml if it exists.
        #[arg(long, value_name = "PATH")]
        kubelet_config: Option<PathBuf>,
    },
    /// Work with the node's images.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Load the images of an OCI image layout or `docker save` archive (plain or gzip; `-` reads
    /// stdin), for nodes without a registry. Goes through the running daemon, or straight into
    /// the root when none runs. Prints each image's name and ID.
    Import {
        /// The archive (`.tar` or `.tar.gz`), or `-` for stdin.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Names the layout's images that carry only a tag (e.g. `example.com/app` makes tag
        /// `v1` into `example.com/app:v1`).
        #[arg(long, value_name = "NAME")]
        base_name: Option<String>,
        /// The configuration file (for the root and state dirs), as for `serve`.
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the default configuration as a commented TOML file.
    Default,
    /// Check a configuration file and print the effective configuration.
    Check {
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // The helper roles (container monitor, exec) fork: they must run before any thread starts,
    // and they are not for people, so they stay out of the CLI's help.
    let argv: Vec<OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a == carapace_runtime::monitor::HELPER_SUBCOMMAND)
    {
        return carapace_runtime::monitor::helper_main(argv[2..].to_vec());
    }
    if argv.get(1).is_some_and(|a| a == INFRA_SUBCOMMAND) {
        return ExitCode::from(u8::try_from(carapace_cri::infra_main()).unwrap_or(1));
    }
    cli_main()
}

/// The commands for people. Kept out of `main`'s frame: inlined, their state (the serve future)
/// made `main` a 14 KiB frame that every container monitor carried on its stack for life.
#[inline(never)]
fn cli_main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => {
            carapace_crashpoint::init();
            serve::run(config)
        }
        Command::Check {
            config,
            json,
            kubelet_config,
        } => match check::run(config.as_deref(), kubelet_config.as_deref(), json) {
            Ok(false) => Ok(()),
            Ok(true) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
        Command::Image {
            command:
                ImageCommand::Import {
                    file,
                    base_name,
                    config,
                },
        } => image::import(config.as_deref(), &file, base_name.as_deref()),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", carapace_cri::config::Config::default_toml());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => serve::load_config(config.as_deref()).and_then(|c| {
            let text = toml::to_string(&c)?;
            print!("{text}");
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("carapace: {e:#}");
            ExitCode::FAILURE
        }
    }
}
