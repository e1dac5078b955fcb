//! `batonctl`: the command-line client of Baton's admin API. Tables for people by default,
//! `--json` for scripts. Talks HTTPS with HTTP Basic authentication on every request.
//!
//! Exit status: 0 on success, 1 when the request fails (the API's error and its fields are
//! printed), 2 on a usage error.

mod alarms;
mod backups;
mod cli;
mod client;
mod cluster;
mod cluster_upgrade;
mod commands;
mod fields;
mod output;
mod policy;
mod prompt;
mod records;
mod render;
mod upgrades;

fn main() {
    let parsed = cli::parse();
    if let Err(error) = commands::run(parsed) {
        match error.downcast_ref::<client::ApiError>() {
            Some(api) => eprint!("{}", render::api_error(api)),
            None => {
                let text = format!("{error:#}");
                eprintln!("error: {text}");
                if let Some(hint) = client::hint(&text) {
                    eprintln!("hint: {hint}");
                }
            }
        }
        std::process::exit(1);
    }
}
