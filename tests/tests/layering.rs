//! The engine's layers import only downward (issue 14, item 6):
//!
//! ```text
//!   scheduler/ ─▶ physical/ ─▶ exchange/, memory/ ─▶ runtime/ ─▶ config, metrics, error
//! ```
//!
//! This test reads the engine's sources and fails naming the file and line
//! of every `crate::…` path that reaches up: `physical/` into the scheduler,
//! `exchange/` and `memory/` into `physical/`, `runtime/` into any of them.

use std::path::{Path, PathBuf};

/// Each layer (a folder of `engine/src`) and the modules it must not name.
const RULES: &[(&str, &[&str])] = &[
    ("physical", &["scheduler", "session", "cli", "events"]),
    (
        "exchange",
        &["physical", "scheduler", "session", "cli", "events"],
    ),
    (
        "memory",
        &["physical", "scheduler", "session", "cli", "events"],
    ),
    (
        "runtime",
        &[
            "physical",
            "exchange",
            "memory",
            "scheduler",
            "session",
            "cli",
            "events",
            "logical",
        ],
    ),
];

fn engine_src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Upward references in one file's text: `(line number, line)`.
fn violations(text: &str, forbidden: &[&str]) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for module in forbidden {
            let path = format!("crate::{module}");
            let hit = code.match_indices(&path).any(|(at, _)| {
                let after = code[at + path.len()..].chars().next();
                !after.is_some_and(|c| c.is_alphanumeric() || c == '_')
            });
            if hit {
                found.push((i + 1, line.trim().to_string()));
                break;
            }
        }
    }
    found
}

#[test]
fn engine_layers_import_only_downward() {
    let src = engine_src();
    let mut problems = Vec::new();
    for (layer, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no sources under engine/src/{layer}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read source");
            for (line, code) in violations(&text, forbidden) {
                let rel = file.strip_prefix(&src).unwrap_or(&file);
                problems.push(format!(
                    "engine/src/{}:{line}: `{code}` reaches up from {layer}/ (it must not use {})",
                    rel.display(),
                    forbidden.join(", ")
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "upward imports:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import() {
    let text = "use crate::error::Result;\n// crate::scheduler in a comment is fine\nuse crate::scheduler::tracker::MapOutputTracker;\nuse crate::physicality;\n";
    let found = violations(text, &["scheduler", "physical"]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 3);
}
