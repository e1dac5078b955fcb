//! The daemon's layering check, run as a test: inside `crates/daemon/src` a module may import
//! (by `crate::…` or `super::…` paths) only modules of its own layer or a lower one, and the
//! layers below the adapters use no HTTP types (`axum`). The layers, lowest first:
//!
//! | layer | modules | may import |
//! |---|---|---|
//! | 0 | `base` (clock, random, version, TLS identity, auth, journal kinds, durable writes) | base |
//! | 1 | `store` (writer thread, readers, cluster settings) | base, store |
//! | 2 | `services` (what the appliance does; `services::Error`) | base, store, services |
//! | 3 | `adapters` (`api`, `web`, `vcs`: HTTP in, service call, view out) | everything below |
//! | 4 | the composition root: `startup` and the crate root (`lib.rs`: configuration, `start`) | everything |

use crate::workspace_root;
use std::path::Path;

/// The daemon's top-level modules by layer, lowest first; the crate root (`lib.rs`) is above
/// them all.
const LAYERS: &[&[&str]] = &[&["base"], &["store"], &["services"], &["adapters"], &["startup"]];
/// Layers below this one must not use HTTP types.
const HTTP_LAYER_MIN: usize = 3;

#[test]
fn the_daemon_imports_only_downwards() {
    let problems = violations(&workspace_root().join("crates/daemon/src"));
    crate::tidy::report(
        "layering violations in crates/daemon (see xtask/src/layers.rs)",
        &problems,
    );
}

/// Every upward import and every HTTP type below the adapters, under the source tree `src`.
fn violations(src: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let files = crate::tidy::rust_files_under(src).into_iter().filter(|file| {
        let relative = file.strip_prefix(src).unwrap_or(file);
        // The crate root and the binaries are above every layer.
        !relative.starts_with("bin") && !matches!(relative.to_str(), Some("lib.rs" | "main.rs"))
    });
    for file in files {
        let relative = file.strip_prefix(src).unwrap_or(&file);
        let module = module_path(relative);
        let Some(first) = module.first() else { continue };
        let Some(layer) = layer_of(first) else {
            problems.push(format!(
                "{}: module `{first}` has no layer (LAYERS in xtask/src/layers.rs)",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (number, line) in code_lines(&text) {
            let at = format!("{}:{number}", relative.display());
            for target in imported_modules(line, &module) {
                match layer_of(&target) {
                    Some(target_layer) if target_layer > layer => problems.push(format!(
                        "{at}: `{first}` (layer {layer}) imports `{target}` (layer {target_layer}), a higher layer"
                    )),
                    _ => {}
                }
            }
            if layer < HTTP_LAYER_MIN && uses_http_types(line) {
                problems.push(format!(
                    "{at}: `{first}` (layer {layer}) uses axum; HTTP types belong in the adapters"
                ));
            }
        }
    }
    problems
}

/// The layer of a top-level module; `None` for one missing from the table. The crate root
/// (`main.rs`, `bin/`, the binaries) is above every layer and not checked.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|modules| modules.contains(&module))
}

/// The module path of a source file: `services/records.rs` → `[services, records]`,
/// `services/mod.rs` → `[services]`, `lib.rs` → `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> =
        relative.iter().map(|part| part.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if !matches!(stem, "mod" | "lib" | "main") {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// Lines that are code: comments (doc comments included) are skipped.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.split("//").next().unwrap_or_default()))
        .filter(|(_, line)| !line.trim().is_empty())
}

/// The top-level modules a line names through `crate::` or `super::` paths.
fn imported_modules(line: &str, module: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for (start, _) in line.match_indices("crate::") {
        if line[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        found.extend(first_segments(&line[start + "crate::".len()..]));
    }
    for (start, _) in line.match_indices("super::") {
        if line[..start].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut rest = &line[start..];
        let mut depth = 0;
        while let Some(after) = rest.strip_prefix("super::") {
            depth += 1;
            rest = after;
        }
        // `super` from a module `depth` levels deep reaches the crate root: the next segment
        // is a top-level module. Above that it stays inside the same top-level module.
        if depth >= module.len() {
            found.extend(first_segments(rest));
        }
    }
    found
}

/// The first path segment of `rest`, or of each item of a `{…}` group.
fn first_segments(rest: &str) -> Vec<String> {
    let ident = |text: &str| -> String {
        text.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
    };
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest)].into_iter().filter(|name| !name.is_empty()).collect();
    };
    let mut names = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for (index, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => item_start = true,
            c if item_start && !c.is_whitespace() => {
                item_start = false;
                names.push(ident(&group[index..]));
            }
            _ => {}
        }
    }
    names.retain(|name| !name.is_empty() && name != "self");
    names
}

fn uses_http_types(line: &str) -> bool {
    line.match_indices("axum").any(|(start, _)| {
        let before = line[..start].chars().next_back();
        let after = &line[start + "axum".len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.starts_with("::")
    })
}

#[test]
fn upward_imports_and_http_types_below_the_adapters_are_reported() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("creating folders");
        std::fs::write(path, text).expect("writing a source file");
    };
    write("lib.rs", "pub mod base;\npub mod store;\nuse crate::adapters::api;\n");
    write(
        "base/mod.rs",
        "//! `crate::services::App` named in a comment is fine.\npub mod clock;\n",
    );
    write("base/clock.rs", "pub fn now_ms() -> u64 { 0 }\n");
    write(
        "store/mod.rs",
        "use crate::{base::clock, services::cluster::ClusterSettings};\nuse super::adapters::web;\n",
    );
    write("services/records.rs", "use super::super::adapters::api::ApiError;\nuse super::App;\n");
    write("services/mod.rs", "use axum::http::StatusCode;\nuse crate::store::Writer;\n");
    write("adapters/api/mod.rs", "use crate::services::App;\nuse axum::Router;\n");
    write("extra/mod.rs", "pub fn f() {}\n");
    let problems = violations(src);
    assert_eq!(
        problems,
        [
            "extra/mod.rs: module `extra` has no layer (LAYERS in xtask/src/layers.rs)".to_owned(),
            "services/mod.rs:1: `services` (layer 2) uses axum; HTTP types belong in the adapters"
                .to_owned(),
            "services/records.rs:1: `services` (layer 2) imports `adapters` (layer 3), a higher layer"
                .to_owned(),
            "store/mod.rs:1: `store` (layer 1) imports `services` (layer 2), a higher layer".to_owned(),
            "store/mod.rs:2: `store` (layer 1) imports `adapters` (layer 3), a higher layer".to_owned(),
        ]
    );
}
