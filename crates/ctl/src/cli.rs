//! The command line: global connection flags, the fixed commands, and one subcommand per record
//! collection, generated from [`model::RecordKind`] so a new kind needs no change here.

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use model::RecordKind;
use std::ffi::OsString;
use std::path::PathBuf;

/// The admin API of a daemon started by `cargo xtask run`, and of an appliance on its box.
pub(crate) const DEFAULT_URL: &str = "https://127.0.0.1:8443";

const ABOUT: &str = "Manage a Baton appliance through its admin API";

const AFTER_HELP: &str = "\
Authentication: the password comes from BATON_PASSWORD, or from the first line of stdin with
--password-stdin (asked for when stdin is a terminal); it is never taken as a flag value.
TLS: the daemon's CA is trusted with --ca <data dir>/tls/ca.pem (or BATON_CA); without either,
./.baton-dev/tls/ca.pem is used when it exists (the CA of `cargo xtask run`).

Record collections take list, show, create, update, delete; settings take show, set, clear.
`batonctl <collection> --help` lists the fields of its records. Examples:
  batonctl bridges list
  batonctl bridges create --set name=mcu1 --set bridge_type=mcu --set address=192.0.2.5 \\
      --set username=api --set password=secret --set capacity_ports=40
  batonctl bridges update mcu1 --set capacity_ports=80
  batonctl ntp set --set servers=192.0.2.1,192.0.2.2
  batonctl log config --kind bridges --since 2026-11-24T10:00:00Z";

const PASSWORD_HELP: &str = "\
Change your own password.

Reads the current and the new password from two lines of stdin. The current one comes from
BATON_PASSWORD instead when that is set (and --password-stdin is not given), and the new one
from BATON_NEW_PASSWORD when that is set. On a terminal both are asked for, without echo.
Example: printf 'TANDBERG\\nnew passphrase\\n' | batonctl password";

#[derive(Parser, Debug)]
#[command(name = "batonctl", version, about = ABOUT, after_help = AFTER_HELP)]
#[command(subcommand_required = true, arg_required_else_help = true)]
// Unknown names reach us instead of clap so they are reported as "not a collection".
#[command(allow_external_subcommands = true)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    /// `None` for record collections, which are added to the grammar at run time.
    #[command(subcommand)]
    command: Option<Command>,
}

/// Flags accepted anywhere on the command line.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Global options")]
pub(crate) struct Globals {
    /// The admin API of the peer to manage.
    #[arg(long, env = "BATON_URL", default_value = DEFAULT_URL, global = true)]
    pub(crate) url: String,
    /// Administrator account.
    #[arg(long, env = "BATON_USER", default_value = "admin", global = true)]
    pub(crate) user: String,
    /// Read the password from the first line of stdin instead of BATON_PASSWORD.
    #[arg(long, global = true)]
    pub(crate) password_stdin: bool,
    /// Trust this CA certificate (PEM), normally the daemon's `<data dir>/tls/ca.pem`.
    #[arg(long, env = "BATON_CA", value_name = "PEM_FILE", global = true)]
    pub(crate) ca: Option<PathBuf>,
    /// Do not verify the daemon's certificate (prints a warning).
    #[arg(long, global = true)]
    pub(crate) insecure: bool,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Version, peer identity, uptime and log position.
    Status,
    /// Change your own password (reads it from stdin; see --help).
    #[command(long_about = PASSWORD_HELP)]
    Password,
    /// The whole configuration, now or at a past time, and what changed between two times.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Every change to one record, newest first.
    History {
        /// Collection or kind, e.g. `bridges` or `bridge`.
        #[arg(value_parser = parse_kind)]
        collection: RecordKind,
        /// The record's name; settings (singletons) need none.
        name: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// The Configuration Log (who changed what) or this peer's Event Log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Back up this peer, restore a backup, or inspect one without applying it.
    #[command(subcommand, after_help = BACKUP_HELP)]
    Backup(BackupCommand),
    /// This peer's software slots: status, install a signed upgrade image, reboot into it.
    #[command(subcommand, after_help = UPGRADE_HELP)]
    Upgrade(UpgradeCommand),
    /// Restart the Baton service, reboot or shut down this peer (asks for --yes).
    #[command(subcommand)]
    System(SystemCommand),
    /// The policy service: its status, and what a call would get (without placing it).
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// This peer's active alarms (`batonctl alarms`), or acknowledge one.
    Alarms {
        #[command(subcommand)]
        action: Option<AlarmsCommand>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCommand {
    /// Whether this peer serves the VCS (and why not), and each bridge's health seen from here.
    Status,
    /// What a call to ALIAS would get now and why (aliases tried, template, bridges weighed
    /// with free ports and health, the CPL), decided as a real call is. No conference is
    /// created and nothing is recorded.
    Explain {
        /// The dialled alias, e.g. meet.alice@example.com.
        alias: String,
        /// The caller's alias (shown; no rule decides on it).
        #[arg(long, value_name = "ALIAS")]
        source: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SystemCommand {
    /// Restart the Baton service only (no configuration change needs it).
    Restart(Confirm),
    /// Reboot the machine.
    Reboot(Confirm),
    /// Power the machine off; it stays off until powered on.
    Shutdown(Confirm),
}

#[derive(clap::Args, Debug)]
pub(crate) struct Confirm {
    /// Confirms it: without it nothing is done.
    #[arg(long)]
    pub(crate) yes: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum AlarmsCommand {
    /// List the active alarms (the default).
    List,
    /// Silence an active alarm; it stays listed until its condition clears.
    Acknowledge {
        /// The alarm's id, e.g. `peer_failed`.
        id: String,
        /// What it is about, as listed (a peer's address, a bridge); none for the appliance.
        subject: Option<String>,
    },
}

const UPGRADE_HELP: &str = "\
An upgrade image (made by `cargo xtask upgrade-image`) is installed into the slot that is not
running; the next boot tries it (three tries) and keeps it once its health gate passed, or
falls back to the running slot by itself. Refused, with nothing written: an image signed by an
untrusted key, for another product or architecture, damaged or truncated, older than the
running version (unless --allow-downgrade), or for a newer minimum version. Examples:
  batonctl upgrade status
  batonctl upgrade install baton-0.2.0.upgrade
  batonctl upgrade install baton-0.2.0.upgrade --reboot
  batonctl upgrade reboot";

#[derive(Subcommand, Debug)]
pub(crate) enum UpgradeCommand {
    /// Running version and slot, the last boot (including a fallback), the boot entries.
    Status,
    /// Upload and install an upgrade image into the inactive slot.
    Install {
        /// The image file.
        image: PathBuf,
        /// Reboot into it as soon as it is installed.
        #[arg(long)]
        reboot: bool,
        /// Install an image older than the running version.
        #[arg(long)]
        allow_downgrade: bool,
    },
    /// Reboot the peer (into an installed upgrade, if there is one).
    Reboot,
}

const BACKUP_HELP: &str = "\
The backup password (of an encrypted backup) comes from BATON_BACKUP_PASSWORD, else from the
next line of stdin (after the login password's line with --password-stdin), asked for without
echo on a terminal. Restore is refused, with nothing changed, for a backup of another machine,
of newer software, a wrong password, a damaged or truncated file, and while the peer is in a
cluster (put it in standalone mode first). Examples:
  batonctl backup create --output peer1.tar.gz
  batonctl backup create --encrypt
  batonctl backup inspect 0.1.0_SERIAL_20261124_100000_backup.tar.gz.enc
  batonctl backup restore peer1.tar.gz";

#[derive(Subcommand, Debug)]
pub(crate) enum BackupCommand {
    /// Download a backup of this peer (configuration, its own settings, certificates).
    Create {
        /// Where to write it; default: the daemon's file name in the current folder.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Encrypt it with a backup password (see below for where it is read from).
        #[arg(long)]
        encrypt: bool,
    },
    /// Restore a backup on this peer, at once and without a restart.
    Restore { file: PathBuf },
    /// Show a backup's manifest and, when a daemon answers, what restoring it would change.
    Inspect { file: PathBuf },
    /// The running (or last) backup or restore: bytes done of the total.
    Progress,
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCommand {
    /// The configuration now, or `--at` a past time.
    Show {
        /// RFC 3339 time (e.g. 2026-11-24T10:00:00Z) or milliseconds since the epoch.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
    },
    /// The configuration as it was at TIME (same as `show --at TIME`).
    At {
        /// RFC 3339 time (e.g. 2026-11-24T10:00:00Z) or milliseconds since the epoch.
        time: String,
    },
    /// What changed between FROM and TO (default: now).
    Diff { from: String, to: Option<String> },
}

#[derive(Subcommand, Debug)]
pub(crate) enum LogCommand {
    /// Who changed what, when: the changes made on this peer, newest first (with
    /// --all-peers, also those that arrived from the other peers).
    Config {
        /// Also the changes made on the other peers of the cluster (each row names its peer).
        #[arg(long)]
        all_peers: bool,
        /// Only changes by this administrator.
        #[arg(long)]
        actor: Option<String>,
        /// Only this collection or kind, e.g. `bridges`.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<RecordKind>,
        /// Only records of this name.
        #[arg(long)]
        name: Option<String>,
        /// Only changes at or after TIME (RFC 3339 or epoch milliseconds).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Only changes at or before TIME (RFC 3339 or epoch milliseconds).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[command(flatten)]
        page: Page,
    },
    /// System events of this peer (start, stop, logins, failures), newest first.
    Events {
        /// Only events at this level or worse.
        #[arg(long, value_parser = ["info", "warning", "error"])]
        level: Option<String>,
        /// Only events whose kind starts with this, e.g. `login`.
        #[arg(long)]
        kind: Option<String>,
        /// Only events whose message contains this.
        #[arg(long)]
        text: Option<String>,
        #[command(flatten)]
        page: Page,
    },
}

#[derive(Args, Debug)]
pub(crate) struct Page {
    /// Rows per page (the daemon's default when not given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) limit: Option<u64>,
    /// Older rows than this position or id, as given by the previous page's `more:` line.
    #[arg(long, value_name = "N")]
    pub(crate) before: Option<u64>,
}

/// Actions on a collection of named records.
#[derive(Subcommand, Debug)]
pub(crate) enum NamedAction {
    /// A table of every record.
    List,
    /// One record's fields.
    Show { name: String },
    /// Create a record from --set fields and/or a --file.
    Create(Body),
    /// Change some fields of a record; the others (secrets included) keep their values.
    Update {
        name: String,
        #[command(flatten)]
        body: Body,
    },
    /// Delete a record.
    Delete { name: String },
}

/// `batonctl bridges pin <name>`: pins the certificate the bridge presents.
#[derive(Args, Debug)]
pub(crate) struct PinBridge {
    /// The bridge.
    pub(crate) name: String,
    /// The SHA-256 fingerprint you compared (as `bridges show` prints it); refused if the
    /// bridge now presents another. Without it, the one `bridges show` prints now is pinned.
    #[arg(long, value_name = "AB:CD:…")]
    pub(crate) sha256: Option<String>,
}

/// Actions on a settings collection, which holds at most one record.
#[derive(Subcommand, Debug)]
pub(crate) enum SettingsAction {
    /// The current settings (or "not set"; `null` with --json).
    Show,
    /// Set some fields; when the settings exist, the others keep their values.
    Set(Body),
    /// Remove the settings (back to the defaults).
    Clear,
}

/// The cluster settings' actions, and the cluster's own commands.
#[derive(Subcommand, Debug)]
pub(crate) enum ClusterAction {
    /// This peer's cluster settings (the key is never shown).
    Show,
    /// Set some fields; when the settings exist, the others keep their values.
    Set(Body),
    /// Standalone mode: this peer stops talking to the cluster and keeps its data.
    Clear,
    /// Each peer of the list: "This system", "Active as <host>", or why not.
    Status,
    /// Add the peer at --url to the cluster of the --member peers, in one step: every member
    /// lists it, it takes the key (BATON_CLUSTER_KEY or asked for) and the list, and the
    /// command waits until every link is active (the new peer's daemon does the join, as its
    /// web page does, accepting only the first member's certificate verified here, and the
    /// other members' as the first one relays them). A
    /// standalone first member founds the cluster. The new peer's shared configuration is
    /// replaced by the cluster's; its own settings stay. The --ca file may hold several CAs.
    Join {
        /// Admin API URL of an existing member (the join goes through the first; the others,
        /// if given, are checked to agree with it).
        #[arg(long = "member", value_name = "URL", required = true)]
        members: Vec<String>,
    },
    /// Upgrade every peer to IMAGE without a moment when no peer serves the VCS: the seed's
    /// seven tasks (the others leave the cluster and are upgraded, re-clustered and given the
    /// VCS's calls; then the last peer is upgraded and joins them), each checked. Running it
    /// again after an interruption continues from what the peers show. Needs the cluster key
    /// (BATON_CLUSTER_KEY or asked for) to re-cluster.
    #[command(long_about = None)]
    Upgrade(UpgradeArgs),
}

/// `cluster upgrade`'s arguments.
#[derive(Args, Debug, Clone)]
pub(crate) struct UpgradeArgs {
    /// The signed upgrade image.
    pub(crate) image: PathBuf,
    /// Admin API URL of another peer; give every peer besides --url's. Without it the peers
    /// are https://<address>[:<--url's port>] for each address --url's cluster lists.
    #[arg(long = "peer", value_name = "URL")]
    pub(crate) peers: Vec<String>,
    /// The peer to upgrade last (its address or URL): it serves the VCS alone meanwhile.
    /// Default: the peer at --url.
    #[arg(long, value_name = "PEER")]
    pub(crate) last: Option<String>,
    /// How long a rebooted peer gets to answer again with the new version.
    #[arg(long, value_name = "SECONDS", default_value_t = 900)]
    pub(crate) reboot_timeout_s: u64,
}

/// The fields of a record to send.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[group(required = true, multiple = true)]
pub(crate) struct Body {
    /// A JSON object with the fields (`-` reads it from stdin). --set values apply on top.
    /// Keeps secrets out of the shell history and the process list.
    #[arg(long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// One field. VALUE is read as JSON when it is valid JSON of the type the field takes
    /// (40, true, null, ["a","b"]), otherwise as text; a list field also takes a,b,c.
    #[arg(long = "set", value_name = "FIELD=VALUE", value_parser = parse_pair)]
    pub(crate) set: Vec<(String, String)>,
}

/// What to do, as parsed.
#[derive(Debug)]
pub(crate) enum Invocation {
    Command(Command),
    Named(RecordKind, NamedAction),
    Settings(RecordKind, SettingsAction),
    Cluster(ClusterAction),
    /// `conferences` or `conferences live`: what the bridges host now.
    LiveConferences,
    PinBridge(PinBridge),
    /// A name that is neither a command nor a collection.
    Unknown(String),
}

#[derive(Debug)]
pub(crate) struct Parsed {
    pub(crate) globals: Globals,
    pub(crate) invocation: Invocation,
}

/// The full grammar, with a subcommand for each record collection.
pub(crate) fn command() -> clap::Command {
    let mut command = Cli::command();
    for &kind in RecordKind::ALL {
        command = command.subcommand(collection_command(kind));
    }
    command
}

/// `batonctl conferences live` (also `batonctl conferences`).
const LIVE_ACTION: &str = "live";
const LIVE_ABOUT: &str =
    "the conferences each bridge hosts now, with their participants, as the bridges list them";

fn collection_command(kind: RecordKind) -> clap::Command {
    let fields = crate::fields::help(kind);
    let mut base = clap::Command::new(kind.collection())
        .subcommand_required(true)
        .arg_required_else_help(true)
        .after_help(fields.clone());
    if kind.as_str() != kind.collection() {
        // `batonctl bridge list` works too, as the logs take either spelling.
        base = base.alias(kind.as_str());
    }
    if kind == RecordKind::Cluster {
        ClusterAction::augment_subcommands(base)
            .about("cluster settings and status: show, set, clear, status, join, upgrade")
            .mut_subcommand("set", |set| set.after_help(fields))
    } else if kind == RecordKind::Conference {
        NamedAction::augment_subcommands(base)
            .subcommand_required(false)
            .arg_required_else_help(false)
            .subcommand(clap::Command::new(LIVE_ACTION).about(LIVE_ABOUT))
            .about(format!("conferences: {LIVE_ACTION} (the default: {LIVE_ABOUT}); records: list, show, create, update, delete"))
            .mut_subcommand("create", |create| create.after_help(fields.clone()))
            .mut_subcommand("update", |update| update.after_help(fields))
    } else if kind.is_singleton() {
        SettingsAction::augment_subcommands(base)
            .about(format!("{} settings: show, set, clear", kind.as_str()))
            .mut_subcommand("set", |set| set.after_help(fields))
    } else if kind == RecordKind::Bridge {
        let pin = PinBridge::augment_args(clap::Command::new("pin")).about(
            "Pin the certificate the bridge presents (shown by `show`): only it is accepted then",
        );
        NamedAction::augment_subcommands(base)
            .subcommand(pin)
            .about("bridge records: list, show, create, update, delete, pin")
            .mut_subcommand("create", |create| create.after_help(fields.clone()))
            .mut_subcommand("update", |update| update.after_help(fields))
    } else {
        NamedAction::augment_subcommands(base)
            .about(format!("{} records: list, show, create, update, delete", kind.as_str()))
            .mut_subcommand("create", |create| create.after_help(fields.clone()))
            .mut_subcommand("update", |update| update.after_help(fields))
    }
}

/// Parses the process's arguments, exiting with clap's message (and status 2) on a usage error.
pub(crate) fn parse() -> Parsed {
    try_parse_from(std::env::args_os()).unwrap_or_else(|error| error.exit())
}

pub(crate) fn try_parse_from<I, T>(args: I) -> Result<Parsed, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut command = command();
    let matches = command.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches).map_err(|error| error.format(&mut command))?;
    let invocation = match cli.command {
        Some(Command::History { collection, name: None, .. }) if !collection.is_singleton() => {
            let message =
                format!("say which record: batonctl history {} <NAME>", collection.collection());
            let mut history = command.find_subcommand("history").cloned().unwrap_or(command);
            return Err(history.error(ErrorKind::MissingRequiredArgument, message));
        }
        Some(command) => Invocation::Command(command),
        None => {
            let Some((name, sub)) = matches.subcommand() else {
                return Err(command.error(ErrorKind::MissingSubcommand, "give a command"));
            };
            match RecordKind::from_collection(name) {
                Some(RecordKind::Cluster) => Invocation::Cluster(
                    ClusterAction::from_arg_matches(sub)
                        .map_err(|error| error.format(&mut command))?,
                ),
                Some(RecordKind::Conference)
                    if matches!(sub.subcommand_name(), None | Some(LIVE_ACTION)) =>
                {
                    Invocation::LiveConferences
                }
                Some(RecordKind::Bridge) if sub.subcommand_name() == Some("pin") => {
                    let pin = sub.subcommand_matches("pin").unwrap_or(sub);
                    Invocation::PinBridge(
                        PinBridge::from_arg_matches(pin)
                            .map_err(|error| error.format(&mut command))?,
                    )
                }
                Some(kind) if kind.is_singleton() => Invocation::Settings(
                    kind,
                    SettingsAction::from_arg_matches(sub)
                        .map_err(|error| error.format(&mut command))?,
                ),
                Some(kind) => Invocation::Named(
                    kind,
                    NamedAction::from_arg_matches(sub)
                        .map_err(|error| error.format(&mut command))?,
                ),
                None => Invocation::Unknown(name.to_owned()),
            }
        }
    };
    Ok(Parsed { globals: cli.globals, invocation })
}

/// A record kind from its collection (`bridge-pools`) or kind name (`bridge_pool`).
pub(crate) fn parse_kind(text: &str) -> Result<RecordKind, String> {
    RecordKind::from_collection(text).or_else(|| RecordKind::from_name(text)).ok_or_else(|| {
        let all: Vec<&str> = RecordKind::ALL.iter().map(|kind| kind.collection()).collect();
        format!("not a collection; one of: {}", all.join(", "))
    })
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((field, _)) if field.trim().is_empty() => Err("the field name is empty".to_owned()),
        Some((field, value)) => Ok((field.trim().to_owned(), value.to_owned())),
        None => Err("expected FIELD=VALUE".to_owned()),
    }
}

/// The command or collection most like a mistyped `name`, if one is close.
pub(crate) fn suggestion(name: &str) -> Option<String> {
    let names = command()
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .filter(|candidate| candidate != "help")
        .collect::<Vec<_>>();
    let best = names
        .into_iter()
        .map(|candidate| (edit_distance(name, &candidate), candidate))
        .min_by_key(|(distance, _)| *distance)?;
    (best.0 <= 2 || best.1.starts_with(name) && !name.is_empty()).then_some(best.1)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, clap::Error> {
        try_parse_from(std::iter::once("batonctl").chain(args.iter().copied()))
    }

    #[test]
    fn the_grammar_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn collections_take_their_actions_and_global_flags_anywhere() {
        let parsed = parse(&["bridges", "list", "--json", "--user", "ops"]).unwrap();
        assert!(parsed.globals.json);
        assert_eq!(parsed.globals.user, "ops");
        assert!(matches!(
            parsed.invocation,
            Invocation::Named(RecordKind::Bridge, NamedAction::List)
        ));

        let parsed = parse(&["bridges", "update", "mcu1", "--set", "capacity_ports=8"]).unwrap();
        let Invocation::Named(RecordKind::Bridge, NamedAction::Update { name, body }) =
            parsed.invocation
        else {
            panic!("{:?}", parsed.invocation)
        };
        assert_eq!(name, "mcu1");
        assert_eq!(body.set, vec![("capacity_ports".to_owned(), "8".to_owned())]);

        let parsed = parse(&["--insecure", "ntp", "set", "--set", "servers=a,b"]).unwrap();
        assert!(parsed.globals.insecure);
        assert!(matches!(parsed.invocation, Invocation::Settings(RecordKind::Ntp, _)));
    }

    #[test]
    fn conferences_alone_or_live_is_the_live_view_and_policy_explain_takes_a_source() {
        for args in [&["conferences"][..], &["conferences", "live"], &["conference", "live"]] {
            let parsed = parse(args).unwrap();
            assert!(matches!(parsed.invocation, Invocation::LiveConferences), "{args:?}");
        }
        let parsed = parse(&["conferences", "list"]).unwrap();
        assert!(matches!(
            parsed.invocation,
            Invocation::Named(RecordKind::Conference, NamedAction::List)
        ));
        let parsed = parse(&["policy", "explain", "meet.a@example.com", "--source", "b"]).unwrap();
        let Invocation::Command(Command::Policy(PolicyCommand::Explain { alias, source })) =
            parsed.invocation
        else {
            panic!("{:?}", parsed.invocation)
        };
        assert_eq!((alias.as_str(), source.as_deref()), ("meet.a@example.com", Some("b")));
        let kind = parse(&["policy", "explain"]).unwrap_err().kind();
        assert_eq!(kind, ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn usage_errors_come_from_clap() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["bridges", "set", "--set", "a=1"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["ntp", "list"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["bridges", "show"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["bridges", "create"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["bridges", "create", "--set", "novalue"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["bridges", "create", "--set", "=x"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["history", "bridges"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["history", "spaceships", "x"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["log", "events", "--level", "loud"]), ErrorKind::InvalidValue);
        assert_eq!(kind(&["log", "config", "--limit", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["status", "--password", "x"]), ErrorKind::UnknownArgument);
    }

    #[test]
    fn history_of_settings_needs_no_name_and_kinds_take_either_spelling() {
        let parsed = parse(&["history", "ntp"]).unwrap();
        assert!(matches!(
            parsed.invocation,
            Invocation::Command(Command::History { collection: RecordKind::Ntp, name: None, .. })
        ));
        let parsed = parse(&["log", "config", "--kind", "bridge_pool"]).unwrap();
        assert!(matches!(
            parsed.invocation,
            Invocation::Command(Command::Log(LogCommand::Config {
                kind: Some(RecordKind::BridgePool),
                ..
            }))
        ));
    }

    #[test]
    fn unknown_names_are_left_to_the_caller_with_a_suggestion() {
        let parsed = parse(&["spaceships", "list"]).unwrap();
        assert!(matches!(parsed.invocation, Invocation::Unknown(name) if name == "spaceships"));
        assert_eq!(suggestion("brdiges").as_deref(), Some("bridges"));
        assert_eq!(suggestion("brige").as_deref(), Some("bridges"));
        let parsed = parse(&["bridge_pool", "show", "p"]).unwrap();
        assert!(matches!(parsed.invocation, Invocation::Named(RecordKind::BridgePool, _)));
        assert_eq!(suggestion("stauts").as_deref(), Some("status"));
        assert_eq!(suggestion("spaceships"), None);
    }

    // Goal: `batonctl alarms` lists by default, and the Restart options parse with --yes.
    #[test]
    fn alarms_and_restart_options_parse() {
        let parsed = parse(&["alarms"]).unwrap();
        assert!(matches!(parsed.invocation, Invocation::Command(Command::Alarms { action: None })));
        let parsed = parse(&["alarms", "acknowledge", "peer_failed", "10.0.0.2"]).unwrap();
        let Invocation::Command(Command::Alarms {
            action: Some(AlarmsCommand::Acknowledge { id, subject }),
        }) = parsed.invocation
        else {
            panic!("not an acknowledgement")
        };
        assert_eq!((id.as_str(), subject.as_deref()), ("peer_failed", Some("10.0.0.2")));
        let parsed = parse(&["system", "shutdown", "--yes"]).unwrap();
        assert!(matches!(
            parsed.invocation,
            Invocation::Command(Command::System(SystemCommand::Shutdown(Confirm { yes: true })))
        ));
    }
}
