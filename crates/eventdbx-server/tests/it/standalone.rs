//! The repository stands alone: no source, script, manifest or document cites a specification
//! that lives outside it.
//!
//! The walk starts at the workspace root and reads every source, script, manifest and document
//! (skipping build output, virtual environments and version-control data). A line fails when it
//! holds a section sign, the name of one of the numbered design files that used to sit beside the
//! repository (`NN-name.md`, with NN from 00 to 04), or a path into the shared directory next to
//! the checkout. What the code relies on is written down in `docs/` instead.

use std::path::{Path, PathBuf};

/// Directory names never walked: build output, environments, caches and version control.
const SKIPPED_DIRECTORIES: [&str; 8] = [
    "target",
    ".venv",
    ".git",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
];

/// Extensions of the files that are read; a file without one is read when it starts with `#!`.
const READ_EXTENSIONS: [&str; 12] = [
    "rs", "py", "pyi", "md", "toml", "capnp", "sh", "txt", "yml", "yaml", "cfg", "ini",
];

/// Why `line` cites something outside the repository, or `None` when it does not.
fn outside_citation(line: &str) -> Option<&'static str> {
    if line.contains('\u{a7}') {
        return Some("section sign");
    }
    if line.contains(concat!("..", "/shared")) || line.contains(concat!("shared", "/spec")) {
        return Some("path into the shared directory");
    }
    let bytes = line.as_bytes();
    for (start, window) in bytes.windows(3).enumerate() {
        // `0N-`, then `[a-z-]+` and `.md`: the same pattern as a plain grep for them.
        let starts_name =
            window[0] == b'0' && (b'0'..=b'4').contains(&window[1]) && window[2] == b'-';
        if !starts_name {
            continue;
        }
        let rest = &bytes[start + 3..];
        let name_len = rest
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || **b == b'-')
            .count();
        if name_len > 0 && rest[name_len..].starts_with(b".md") {
            return Some("numbered design file");
        }
    }
    None
}

/// Every file under `dir` worth reading, in a stable order.
fn files_to_read(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !SKIPPED_DIRECTORIES.contains(&name) {
                files_to_read(&path, out);
            }
            continue;
        }
        let readable = match path.extension().and_then(|e| e.to_str()) {
            Some(ext) => READ_EXTENSIONS.contains(&ext),
            None => std::fs::read(&path).is_ok_and(|bytes| bytes.starts_with(b"#!")),
        };
        if readable {
            out.push(path);
        }
    }
}

#[test]
fn the_citation_matcher_knows_what_a_citation_looks_like() {
    let sign = '\u{a7}';
    let cited = [
        format!("// see {sign}4.6"),
        format!("/// (`0{}-server.md`, archive)", 2),
        format!("# docs: 0{}-wire-protocol.md, section 3", 1),
        format!("see ..{}{}", "/shared", "/spec"),
    ];
    for line in &cited {
        assert!(outside_citation(line).is_some(), "not caught: {line}");
    }
    let clean = [
        "/// See `docs/server.md`, \"Archive and restore\".",
        "let v = 2026-12-06;",
        "RFC 6902 section 4.6",
        "file 12-notes.md and a0-x.md",
    ];
    for line in clean {
        assert_eq!(outside_citation(line), None, "wrongly caught: {line}");
    }
}

#[test]
fn no_file_cites_a_specification_outside_the_repository() {
    let root = crate::manifest_dir().join("../..");
    let root = root.canonicalize().expect("workspace root");
    let mut files = Vec::new();
    files_to_read(&root, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("docs/server.md")),
        "the walk did not reach docs/server.md: it is broken"
    );
    let mut found = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (index, line) in text.lines().enumerate() {
            if let Some(why) = outside_citation(line) {
                let shown = file.strip_prefix(&root).unwrap_or(file).display();
                found.push(format!("{shown}:{}: {why}: {}", index + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} line(s) cite a specification outside the repository; point them at docs/ \
         instead:\n{}",
        found.len(),
        found.join("\n")
    );
}
