//! The `carapace` binary: `serve` runs the CRI daemon; `config default` prints the default
//! configuration. Later roles (the per-container monitor, the pod infra process) are re-execs of
//! this same binary, so a node installs one file.

mod notify;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Work with the configuration file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve::run(config),
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
