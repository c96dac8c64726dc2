//! The server crate's modules import one another in one direction only.
//!
//! The test reads the crate's own `src/` and builds a graph from every `crate::…` path (in `use`
//! lines and in code) and every `super::…` path, with comments, strings and character literals
//! removed and inline modules (`mod tests { … }`) tracked so that their `super` means the file's
//! module. It checks two levels: top-level modules (`server`, `connection`, `commands`, …) and
//! the submodules of each directory module among themselves (`plugins::kinds`,
//! `plugins::registry`, …). Paths relative to the current module (`use kinds::Sink` in
//! `plugins/mod.rs`) are a parent reaching into its own children and are not counted: only a
//! child naming its parent or a sibling, or any module naming another by its crate path, is.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One edge of the graph: `from` names `to` at `site` (file and line, for the failure message).
#[derive(Debug)]
struct Reference {
    from: Vec<String>,
    to: Vec<String>,
    site: String,
}

#[test]
fn top_level_modules_do_not_import_each_other_in_a_cycle() {
    let crate_graph = CrateGraph::read(&crate::manifest_dir().join("src"));
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for reference in &crate_graph.references {
        let from = reference.from[0].clone();
        let Some(to) = reference.to.first() else {
            continue;
        };
        if *to != from && crate_graph.modules.contains(&vec![to.clone()]) {
            edges
                .entry(from)
                .or_default()
                .entry(to.clone())
                .or_insert_with(|| reference.site.clone());
        }
    }
    assert_acyclic("crate", &edges);
}

#[test]
fn submodules_of_each_directory_module_do_not_import_each_other_in_a_cycle() {
    let crate_graph = CrateGraph::read(&crate::manifest_dir().join("src"));
    let directories: BTreeSet<&String> = crate_graph
        .modules
        .iter()
        .filter(|path| path.len() == 2)
        .map(|path| &path[0])
        .collect();
    assert!(
        directories.contains(&"plugins".to_owned()),
        "the plugins directory module was not found: the reader is broken"
    );
    for directory in directories {
        let node = |path: &[String]| -> Option<String> {
            if path.first() != Some(directory) {
                return None;
            }
            match path.get(1) {
                Some(child)
                    if crate_graph
                        .modules
                        .contains(&vec![directory.clone(), child.clone()]) =>
                {
                    Some(child.clone())
                }
                _ => Some("mod".to_owned()),
            }
        };
        let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for reference in &crate_graph.references {
            let (Some(from), Some(to)) = (node(&reference.from), node(&reference.to)) else {
                continue;
            };
            if from != to {
                edges
                    .entry(from)
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| reference.site.clone());
            }
        }
        assert_acyclic(directory, &edges);
    }
}

#[test]
fn the_reader_sees_a_cycle_through_crate_and_super_paths() {
    let source =
        "use crate::b::Thing;\nmod tests {\n    use super::*;\n    fn f<'a>() { let _ = ('{', '\\'', \"}\"); }\n}\n\
                  // crate::c::Ignored\nconst S: &str = \"crate::c::Ignored\";\n";
    let mut references = Vec::new();
    collect_references(source, &["a".to_owned()], "a.rs", &mut references);
    let found: Vec<String> = references.iter().map(|r| r.to.join("::")).collect();
    assert_eq!(found, ["b::Thing", "a::*"], "{references:?}");
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    edges
        .entry("a".into())
        .or_default()
        .insert("b".into(), "a.rs:1".into());
    edges
        .entry("b".into())
        .or_default()
        .insert("a".into(), "b.rs:1".into());
    let cycle = find_cycle(&edges).expect("a -> b -> a is a cycle");
    assert!(
        cycle.contains("a.rs:1") && cycle.contains("b.rs:1"),
        "{cycle}"
    );
}

fn assert_acyclic(scope: &str, edges: &BTreeMap<String, BTreeMap<String, String>>) {
    if let Some(cycle) = find_cycle(edges) {
        panic!("import cycle among the modules of {scope}:\n{cycle}");
    }
}

/// A cycle, one `from -> to (file:line)` per line, if the graph has one.
fn find_cycle(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<String> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut path: Vec<&String> = stack[start..].iter().collect();
                path.push(&stack[start]);
                let lines: Vec<String> = path
                    .windows(2)
                    .map(|pair| {
                        format!("  {} -> {} ({})", pair[0], pair[1], edges[pair[0]][pair[1]])
                    })
                    .collect();
                return Some(lines.join("\n"));
            }
            None => {}
        }
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in edges.get(node).into_iter().flat_map(BTreeMap::keys) {
            if let Some(cycle) = visit(next, edges, marks, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut marks, &mut Vec::new()))
}

/// Every module of the crate (by path, `["plugins", "kinds"]`) and every reference between them.
struct CrateGraph {
    modules: BTreeSet<Vec<String>>,
    references: Vec<Reference>,
}

impl CrateGraph {
    fn read(src: &Path) -> CrateGraph {
        let mut files = Vec::new();
        list_rust_files(src, &mut files);
        let mut modules = BTreeSet::new();
        let mut references = Vec::new();
        for file in files {
            let relative = file.strip_prefix(src).expect("under src");
            // Binaries are crates of their own: their `crate::` is not this one.
            if relative.starts_with("bin") || relative == Path::new("lib.rs") {
                continue;
            }
            let module = module_path(relative);
            modules.insert(module.clone());
            let text = std::fs::read_to_string(&file).expect("readable source file");
            collect_references(
                &text,
                &module,
                &relative.display().to_string(),
                &mut references,
            );
        }
        assert!(
            modules.len() > 10,
            "found only {modules:?} under {}",
            src.display()
        );
        CrateGraph {
            modules,
            references,
        }
    }
}

fn list_rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable src directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            list_rust_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// `plugins/kinds.rs` -> `["plugins", "kinds"]`; `plugins/mod.rs` -> `["plugins"]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

/// Source text as tokens (identifiers, `::` and single punctuation), each with its line, with
/// comments, string and character literals and lifetimes left out.
fn tokens(source: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let advance_to = |i: &mut usize, line: &mut usize, end: usize| {
        *line += chars[*i..end.min(chars.len())]
            .iter()
            .filter(|&&c| c == '\n')
            .count();
        *i = end;
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len());
            advance_to(&mut i, &mut line, end);
        } else if c == '/' && next == Some('*') {
            let end = (i + 2..chars.len())
                .find(|&j| chars[j] == '*' && chars.get(j + 1) == Some(&'/'))
                .map_or(chars.len(), |j| j + 2);
            advance_to(&mut i, &mut line, end);
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && raw_string_end(&chars, i).is_some()
        {
            let end = raw_string_end(&chars, i).unwrap_or(chars.len());
            advance_to(&mut i, &mut line, end);
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            advance_to(&mut i, &mut line, j + 1);
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a), which has no closing quote.
            if next == Some('\\') {
                // The escaped character may itself be a quote ('\''): the closing one is after it.
                let end = (i + 3..chars.len())
                    .find(|&j| chars[j] == '\'')
                    .unwrap_or(chars.len());
                advance_to(&mut i, &mut line, end + 1);
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let end = (i..chars.len())
                .find(|&j| !(chars[j].is_alphanumeric() || chars[j] == '_'))
                .unwrap_or(chars.len());
            out.push((chars[i..end].iter().collect(), line));
            i = end;
        } else if c == ':' && next == Some(':') {
            out.push(("::".to_owned(), line));
            i += 2;
        } else {
            if c == '\n' {
                line += 1;
            } else if !c.is_whitespace() {
                out.push((c.to_string(), line));
            }
            i += 1;
        }
    }
    out
}

/// Where a raw string starting at `start` (`r"…"`, `r#"…"#`) ends, if it is one.
fn raw_string_end(chars: &[char], start: usize) -> Option<usize> {
    let hashes = chars[start + 1..].iter().take_while(|&&c| c == '#').count();
    if chars.get(start + 1 + hashes) != Some(&'"') {
        return None;
    }
    let body = start + 2 + hashes;
    (body..chars.len())
        .find(|&j| chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')))
        .map(|j| j + 1 + hashes)
}

/// Appends every `crate::…` and `super::…` path of a file whose module is `module`.
fn collect_references(source: &str, module: &[String], file: &str, out: &mut Vec<Reference>) {
    let tokens = tokens(source);
    let text = |k: usize| tokens.get(k).map_or("", |(t, _)| t.as_str());
    // Inline modules open at a brace depth; `super` inside them is relative to them.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth: usize = 0;
    let mut k = 0;
    while k < tokens.len() {
        let current: Vec<String> = module
            .iter()
            .cloned()
            .chain(inline.iter().map(|(name, _)| name.clone()))
            .collect();
        match text(k) {
            "{" => depth += 1,
            "}" => {
                // Unbalanced text (a brace the tokenizer misread) must not underflow.
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|&(_, open)| open == depth) {
                    inline.pop();
                }
            }
            "mod" if text(k + 2) == "{" => {
                inline.push((text(k + 1).to_owned(), depth));
            }
            "crate" | "super" | "self"
                if text(k + 1) == "::"
                    && (k == 0 || (text(k - 1) != "::" && text(k - 1) != "$")) =>
            {
                let mut base: Vec<String> = match text(k) {
                    "crate" => Vec::new(),
                    _ => current.clone(),
                };
                if text(k) == "super" {
                    base.pop();
                }
                let mut j = k + 2;
                while text(j) == "super" && text(j + 1) == "::" {
                    base.pop();
                    j += 2;
                }
                // `self::x` is a module reaching into its own children: not counted.
                let counted = text(k) != "self";
                let mut heads = Vec::new();
                let group = text(j) == "{";
                if group {
                    // `crate::{a::X, b}`: the first segment of each item of the group.
                    let mut level = 0;
                    let mut expect_head = true;
                    while j < tokens.len() {
                        match text(j) {
                            "{" => {
                                level += 1;
                                expect_head = level == 1;
                            }
                            "}" => {
                                level -= 1;
                                if level == 0 {
                                    break;
                                }
                            }
                            "," if level == 1 => expect_head = true,
                            head if expect_head && level == 1 => {
                                heads.push(vec![head.to_owned()]);
                                expect_head = false;
                            }
                            _ => {}
                        }
                        j += 1;
                    }
                } else {
                    let mut path = Vec::new();
                    while !text(j).is_empty()
                        && text(j) != "::"
                        && text(j)
                            .chars()
                            .all(|c| c.is_alphanumeric() || c == '_' || c == '*')
                    {
                        path.push(text(j).to_owned());
                        if text(j + 1) != "::" {
                            break;
                        }
                        j += 2;
                    }
                    heads.push(path);
                }
                if counted {
                    for head in heads {
                        out.push(Reference {
                            from: module.to_vec(),
                            to: base.iter().cloned().chain(head).collect(),
                            site: format!("{file}:{}", tokens[k].1),
                        });
                    }
                }
                // A group's closing brace is not a block's.
                k = if group { j + 1 } else { j };
                continue;
            }
            _ => {}
        }
        k += 1;
    }
}
