//! Repository tidy checks, run as tests (`cargo xtask tidy`, and part of `cargo xtask test`):
//! every Rust file opens with a `//!` doc comment, no loose shell scripts, no `#[ignore]`d tests.

use crate::workspace_root;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The only shell script allowed in the repository's tooling: the CI entry point.
const ALLOWED_SHELL_SCRIPT: &str = ".ci/run";
/// Scripts that run inside the appliance's initramfs, where initramfs-tools runs hooks and
/// boot scripts with `sh` and no other interpreter exists.
const INITRAMFS_SCRIPTS: &str = "image/initramfs/";

/// Directories never looked into, wherever they are.
const SKIPPED_DIRS: &[&str] = &["target", ".git"];
/// Top-level directories never looked into (the `cargo xtask run` data directory).
const SKIPPED_TOP_LEVEL_DIRS: &[&str] = &[".baton-dev"];

#[test]
fn every_rust_file_starts_with_a_module_doc_comment() {
    let mut problems = Vec::new();
    for file in rust_files(&["crates", "xtask", "tests", "fuzz"]) {
        let text = read(&file);
        match text.lines().map(str::trim).find(|line| !line.is_empty()) {
            Some(line) if line.starts_with("//!") => {}
            Some(line) => problems.push(format!(
                "{}: the first non-empty line must be a `//!` doc comment saying what the file is for, found `{}`",
                relative(&file),
                shorten(line)
            )),
            None => problems.push(format!(
                "{}: empty file; it must start with a `//!` doc comment saying what it is for",
                relative(&file)
            )),
        }
    }
    report("Rust files without a leading `//!` doc comment", &problems);
}

#[test]
fn no_loose_shell_scripts() {
    let mut problems = Vec::new();
    for file in files_under(workspace_root(), true) {
        let path = relative(&file);
        if path == ALLOWED_SHELL_SCRIPT || path.starts_with(INITRAMFS_SCRIPTS) {
            continue;
        }
        if file.extension().is_some_and(|extension| extension == "sh") {
            problems.push(format!(
                "{path}: shell script; write it as an xtask subcommand (Rust) instead"
            ));
        } else if let Some(interpreter) = shell_shebang(&file) {
            problems.push(format!(
                "{path}: shell script (`#!` {interpreter}); write it as an xtask subcommand (Rust) instead"
            ));
        }
    }
    report(&format!("Shell scripts other than {ALLOWED_SHELL_SCRIPT}"), &problems);
}

#[test]
fn no_ignored_tests() {
    let mut problems = Vec::new();
    for file in rust_files(&["crates", "tests"]) {
        for (number, line) in read(&file).lines().enumerate() {
            let code = line.trim_start();
            if ignores_a_test(code) {
                problems.push(format!(
                    "{}:{}: `{}`; a test that should not run by default is gated on BATON_SLOW_TESTS \
                     (or deleted), never ignored",
                    relative(&file),
                    number + 1,
                    shorten(code)
                ));
            }
        }
    }
    report("`#[ignore]` attributes", &problems);
}

/// Whether a (left-trimmed) line of Rust applies `#[ignore]`, directly or through `cfg_attr`.
fn ignores_a_test(code: &str) -> bool {
    if code.starts_with("//") {
        return false;
    }
    let cfg_attr_ignore = code.contains("cfg_attr")
        && code.split(|c: char| !(c.is_alphanumeric() || c == '_')).any(|word| word == "ignore");
    code.contains("#[ignore") || cfg_attr_ignore
}

/// Fails with every problem found, one a line.
pub(crate) fn report(what: &str, problems: &[String]) {
    assert!(problems.is_empty(), "{what} ({}):\n  {}\n", problems.len(), problems.join("\n  "));
}

/// `.rs` files under the given top-level directories of the workspace.
pub(crate) fn rust_files(top_level: &[&str]) -> Vec<PathBuf> {
    top_level.iter().flat_map(|dir| rust_files_under(&workspace_root().join(dir))).collect()
}

/// `.rs` files under `dir`, recursively, sorted (skipping [`SKIPPED_DIRS`]).
pub(crate) fn rust_files_under(dir: &Path) -> Vec<PathBuf> {
    files_under(dir, false)
        .into_iter()
        .filter(|file| file.extension().is_some_and(|extension| extension == "rs"))
        .collect()
}

/// Every file under `dir`, recursively, sorted; skips [`SKIPPED_DIRS`] (and, when `is_root`,
/// [`SKIPPED_TOP_LEVEL_DIRS`]); does not follow symbolic links to directories.
fn files_under(dir: &Path, is_root: bool) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), is_root)];
    while let Some((dir, is_root)) = pending.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => panic!("reading directory {}: {error}", dir.display()),
        };
        for entry in entries {
            let entry = entry
                .unwrap_or_else(|error| panic!("reading directory {}: {error}", dir.display()));
            let path = entry.path();
            let file_type = entry
                .file_type()
                .unwrap_or_else(|error| panic!("inspecting {}: {error}", path.display()));
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if file_type.is_dir() {
                let skipped = SKIPPED_DIRS.contains(&name.as_ref())
                    || (is_root && SKIPPED_TOP_LEVEL_DIRS.contains(&name.as_ref()));
                if !skipped {
                    pending.push((path, false));
                }
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The shell named by the file's `#!` line, if it is one.
fn shell_shebang(file: &Path) -> Option<String> {
    let mut head = [0u8; 256];
    let length = std::fs::File::open(file).and_then(|mut opened| opened.read(&mut head)).ok()?;
    let head = String::from_utf8_lossy(&head[..length]);
    let line = head.strip_prefix("#!")?.lines().next()?.trim();
    let mut words = line.split_whitespace();
    let mut program = words.next()?.rsplit('/').next()?;
    if program == "env" {
        program = words.find(|word| !word.starts_with('-'))?;
    }
    const SHELLS: &[&str] = &["sh", "bash", "dash", "ash", "ksh", "zsh"];
    SHELLS.contains(&program).then(|| line.to_owned())
}

fn read(file: &Path) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_else(|error| panic!("reading {}: {error}", file.display()))
}

/// `file` relative to the workspace root, with `/` separators.
fn relative(file: &Path) -> String {
    let relative = file.strip_prefix(workspace_root()).unwrap_or(file);
    relative
        .components()
        .map(|part| part.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn shorten(line: &str) -> String {
    const MAX: usize = 80;
    if line.chars().count() <= MAX {
        line.to_owned()
    } else {
        format!("{}…", line.chars().take(MAX).collect::<String>())
    }
}

#[test]
fn shebang_detection() {
    let dir = std::env::temp_dir().join(format!("xtask-tidy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    let cases = [
        ("#!/bin/sh\necho\n", true),
        ("#!/usr/bin/env bash\nset -e\n", true),
        ("#!/usr/bin/env -S bash -eu\n", true),
        ("#!/usr/bin/python3\n", false),
        ("//! Rust\n", false),
        ("", false),
    ];
    for (index, (text, is_shell)) in cases.iter().enumerate() {
        let file = dir.join(format!("case-{index}"));
        std::fs::write(&file, text).expect("writing a test file");
        assert_eq!(shell_shebang(&file).is_some(), *is_shell, "{text:?}");
    }
    std::fs::remove_dir_all(&dir).expect("removing the temporary directory");
}

#[test]
fn ignore_detection() {
    assert!(ignores_a_test("#[ignore]"));
    assert!(ignores_a_test("#[ignore = \"slow\"]"));
    assert!(ignores_a_test("#[cfg_attr(not(feature = \"x\"), ignore)]"));
    assert!(!ignores_a_test("// #[ignore] is not allowed"));
    assert!(!ignores_a_test("#[test]"));
    assert!(!ignores_a_test("let ignored = true;"));
}
