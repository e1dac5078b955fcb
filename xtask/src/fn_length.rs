//! Function length check, run as a test: a function longer than [`FUNCTION_LINES_MAX`] lines
//! (from its `fn` line to its closing brace) must be split, unless it is in
//! [`LONG_FUNCTIONS`], the list of those that were already long when the check came. The list
//! only shrinks: a listed function that is no longer long (or no longer exists) fails the
//! check too, until it is taken off the list.

use crate::workspace_root;
use std::collections::BTreeMap;

/// Functions longer than this are hard to read at once.
const FUNCTION_LINES_MAX: usize = 70;

/// Functions over the limit when the check came, as `path::name`; take one off when it is split.
const LONG_FUNCTIONS: &[&str] = &[
    "crates/backup/src/archive.rs::write_backup",
    "crates/backup/src/restore.rs::read_archive",
    "crates/bridges/src/sim.rs::bridge_method",
    "crates/bridges/src/xmlrpc.rs::parse",
    "crates/ctl/src/cluster_upgrade.rs::choose_last",
    "crates/ctl/src/cluster_upgrade.rs::switch_the_vcs",
    "crates/daemon/tests/it/api.rs::bad_requests_are_refused_clearly_and_change_nothing",
    "crates/daemon/tests/it/api.rs::records_round_trip_with_secrets_hidden_and_changes_audited",
    "crates/daemon/tests/it/platform.rs::changed_settings_reach_the_applier_with_their_values_and_only_their_concerns",
    "crates/daemon/tests/it/web.rs::a_bridge_added_through_its_form_is_saved_and_a_refused_form_keeps_the_input",
    "crates/daemon/tests/it/web.rs::references_are_chosen_from_existing_records_in_order",
    "crates/model/src/state.rs::check_references",
    "crates/model/src/validate.rs::validate",
    "crates/model/src/validate_tests.rs::cluster_rules_follow_the_edition_and_the_peers_own_address",
    "crates/model/src/validate_tests.rs::each_rule_reports_its_field",
    "crates/policy/src/cpl.rs::interpret",
    "crates/upgrade/src/tests.rs::refusals_before_the_payload_write_nothing_at_all",
    "tests/it/backup.rs::crash_during_restore_leaves_old_or_new_state",
    "tests/it/browser.rs::an_operator_configures_a_peer_in_the_browser",
    "tests/it/cli.rs::an_operator_configures_baton_with_batonctl",
    "tests/it/cluster.rs::a_join_through_one_member_lists_the_new_peer_on_every_member",
    "tests/it/cluster.rs::the_seed_procedure_step_by_step",
    "tests/it/cluster_upgrade.rs::a_rolling_upgrade_keeps_the_vcs_served_and_resumes_after_an_interruption",
    "tests/it/crash.rs::sigkill_during_a_write_storm_loses_no_acknowledged_change",
    "tests/it/policy.rs::configure",
    "tests/it/upgrade.rs::batonctl_installs_an_upgrade_over_the_stamped_version_and_reports_a_fallback",
    "tests/it/vm.rs::appliance_upgrades_to_the_other_slot_and_falls_back_from_a_broken_one",
    "tests/it/vm_platform.rs::settings_reach_the_guest",
    "tests/it/web_maintenance.rs::a_backup_downloaded_from_the_page_is_restored_after_its_preview_and_refusals_change_nothing",
    "xtask/src/image.rs::assemble",
    "xtask/src/image.rs::image_with_version",
    "xtask/src/run.rs::configure",
    "xtask/src/run.rs::run",
    "xtask/src/vm.rs::vm",
];

#[test]
fn functions_are_short_enough_to_read_at_once() {
    let root = workspace_root();
    let mut lengths = BTreeMap::new();
    for file in crate::tidy::rust_files(&["crates", "xtask", "tests"]) {
        let relative = file.strip_prefix(root).unwrap_or(&file).to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (name, lines) in function_lengths(&text) {
            let longest = lengths.entry(format!("{relative}::{name}")).or_insert(0);
            *longest = lines.max(*longest);
        }
    }
    let problems = problems(&lengths, LONG_FUNCTIONS);
    let what = format!("functions over {FUNCTION_LINES_MAX} lines (see xtask/src/fn_length.rs)");
    crate::tidy::report(&what, &problems);
}

/// Long functions not on the allow-list, and listed ones that are no longer long.
fn problems(lengths: &BTreeMap<String, usize>, allowed: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for (function, &lines) in lengths {
        if lines > FUNCTION_LINES_MAX && !allowed.contains(&function.as_str()) {
            problems.push(format!("{function} has {lines} lines: split it"));
        }
    }
    for function in allowed {
        match lengths.get(*function) {
            Some(&lines) if lines > FUNCTION_LINES_MAX => {}
            Some(lines) => problems
                .push(format!("{function} has {lines} lines now: take it off LONG_FUNCTIONS")),
            None => {
                problems.push(format!("{function} no longer exists: take it off LONG_FUNCTIONS"))
            }
        }
    }
    problems
}

/// Each function's name and its length in lines, from the `fn` line to the closing brace.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let code = blank_strings_and_comments(text);
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut search = 0;
    while let Some(offset) = code[search..].find("fn ") {
        let start = search + offset;
        search = start + 3;
        let before = code[..start].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = code[start + 3..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let Some(open) = code[start..].find(['{', ';']).map(|at| start + at) else { break };
        if bytes[open] == b';' {
            continue;
        }
        let Some(close) = matching_brace(bytes, open) else { break };
        let lines = code[start..=close].matches('\n').count() + 1;
        found.push((name, lines));
    }
    found
}

fn matching_brace(bytes: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (index, byte) in bytes.iter().enumerate().skip(open) {
        match byte {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(index);
                }
            }
            _ => {}
        }
    }
    None
}

/// `text` with string and character literals and comments replaced by spaces (line breaks
/// kept), so braces inside them do not count.
fn blank_strings_and_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while index < chars.len() {
        let rest = &chars[index..];
        let end = if rest.starts_with(&['/', '/']) {
            rest.iter().position(|&c| c == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            block_comment_end(rest)
        } else if let Some(end) = raw_string_end(rest, chars[..index].last().copied()) {
            end
        } else if rest[0] == '"' {
            quoted_end(rest, '"')
        } else if rest[0] == '\'' && is_char_literal(rest) {
            quoted_end(rest, '\'')
        } else {
            out.push(rest[0]);
            index += 1;
            continue;
        };
        out.extend(rest[..end].iter().map(|&c| blank(c)));
        index += end;
    }
    out
}

fn block_comment_end(rest: &[char]) -> usize {
    let mut depth = 0;
    let mut index = 0;
    while index + 1 < rest.len() {
        match (rest[index], rest[index + 1]) {
            ('/', '*') => {
                depth += 1;
                index += 2;
            }
            ('*', '/') => {
                depth -= 1;
                index += 2;
                if depth == 0 {
                    return index;
                }
            }
            _ => index += 1,
        }
    }
    rest.len()
}

/// The length of a raw string (`r"…"`, `r#"…"#`, `br"…"`) starting at `rest`, if one does.
fn raw_string_end(rest: &[char], before: Option<char>) -> Option<usize> {
    if rest[0] != 'r'
        || before.is_some_and(|c| c.is_alphanumeric() || c == '_') && before != Some('b')
    {
        return None;
    }
    let hashes = rest[1..].iter().take_while(|&&c| c == '#').count();
    if rest.get(1 + hashes) != Some(&'"') {
        return None;
    }
    let body = 2 + hashes;
    (body..rest.len())
        .find(|&at| {
            rest[at] == '"'
                && rest[at + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes
        })
        .map(|at| at + 1 + hashes)
}

fn quoted_end(rest: &[char], quote: char) -> usize {
    let mut index = 1;
    while index < rest.len() {
        match rest[index] {
            '\\' => index += 2,
            c if c == quote => return index + 1,
            _ => index += 1,
        }
    }
    rest.len()
}

/// `'x'` or `'\n'`, as opposed to a lifetime (`'a`).
fn is_char_literal(rest: &[char]) -> bool {
    match rest.get(1) {
        Some('\\') => true,
        Some(_) => rest.get(2) == Some(&'\''),
        None => false,
    }
}

#[test]
fn long_functions_are_found_and_the_list_only_shrinks() {
    let body = "    let x = 1;\n".repeat(FUNCTION_LINES_MAX);
    let text = format!(
        "fn long() {{\n{body}}}\n\
         fn short(s: &str) -> char {{ let _ = \"}}}}\"; let _ = r#\"{{\"#; '{{' }}\n\
         // fn commented() {{\n\
         trait T {{ fn declared(&self); fn with_lifetime<'a>(x: &'a str) -> &'a str {{ x }} }}\n"
    );
    let found = function_lengths(&text);
    assert_eq!(
        found,
        [
            ("long".to_owned(), FUNCTION_LINES_MAX + 2),
            ("short".to_owned(), 1),
            ("with_lifetime".to_owned(), 1),
        ]
    );
    let lengths: BTreeMap<String, usize> =
        found.into_iter().map(|(name, lines)| (format!("a.rs::{name}"), lines)).collect();
    assert_eq!(problems(&lengths, &["a.rs::long"]), Vec::<String>::new());
    assert_eq!(problems(&lengths, &[]), ["a.rs::long has 72 lines: split it"]);
    assert_eq!(
        problems(&lengths, &["a.rs::long", "a.rs::short", "a.rs::gone"]),
        [
            "a.rs::short has 1 lines now: take it off LONG_FUNCTIONS",
            "a.rs::gone no longer exists: take it off LONG_FUNCTIONS",
        ]
    );
}
