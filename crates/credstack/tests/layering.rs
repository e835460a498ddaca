//! Imports run one way, from the edge inwards (ARCHITECTURE.md, "Bird's-eye
//! view"), checked on the source: every `crate::name` a top-level module's
//! files write (code, and doc links alike) is an edge of a graph that must
//! have no circle; nothing but the command line and the server imports
//! `http`; the console names no store backend; plain data and metrics name
//! nothing in the crate. Run with `--nocapture` to see the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `http/routes.rs` → `http`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(source_dir()).expect("under src");
    let first = relative.components().next().expect("a component");
    let name = first.as_os_str().to_str().expect("utf-8 path");
    name.trim_end_matches(".rs").to_string()
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// Every top-level module `text` names after `crate::`, `crate::{a, b::c}`
/// included.
fn named(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        names.insert(identifier(group[start..i].trim()).to_string());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.insert(identifier(group[start..i].trim()).to_string());
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(identifier(rest).to_string());
        }
    }
    names.remove("");
    names.remove("self");
    names
}

/// Module → the other top-level modules its files name.
fn graph() -> Graph {
    let mut files = Vec::new();
    rust_files(&source_dir(), &mut files);
    let mut graph = Graph::new();
    for file in files {
        let module = module_of(&file);
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("source file");
        assert!(
            !text.contains("super::super::"),
            "{}: name the crate's modules as crate::…, not super::super::…",
            file.display()
        );
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(named(&text).into_iter().filter(|name| *name != module));
    }
    graph
}

/// A circle through `module`, if any: the path back to where it started.
fn circle(
    graph: &Graph,
    module: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|m| m == module) {
        let mut circle = path[at..].to_vec();
        circle.push(module.to_string());
        return Some(circle);
    }
    if done.contains(module) {
        return None;
    }
    path.push(module.to_string());
    for next in graph.get(module).into_iter().flatten() {
        if let Some(found) = circle(graph, next, path, done) {
            return Some(found);
        }
    }
    path.pop();
    done.insert(module.to_string());
    None
}

#[test]
fn imports_run_one_way_from_the_edge_inwards() {
    let graph = graph();
    for (module, imports) in &graph {
        let imports: Vec<&str> = imports.iter().map(String::as_str).collect();
        println!("{module:>9} → {}", imports.join(" "));
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(found) = circle(&graph, module, &mut Vec::new(), &mut done) {
            panic!("an import circle: {}", found.join(" → "));
        }
    }
}

#[test]
fn only_the_command_line_and_the_server_import_http() {
    for (module, imports) in graph() {
        if imports.contains("http") {
            assert!(
                module == "cli" || module == "server",
                "{module} imports http; what it needs belongs below (wire, body)"
            );
        }
    }
}

#[test]
fn plain_data_and_metrics_name_nothing_in_the_crate() {
    let graph = graph();
    for module in ["records", "ids", "clock", "metrics", "body"] {
        let imports = &graph[module];
        assert!(imports.is_empty(), "{module} imports {imports:?}");
    }
}

#[test]
fn the_console_reads_through_the_store_trait_never_a_backend() {
    let mut files = Vec::new();
    rust_files(&source_dir().join("console"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source file");
        for backend in ["sqlite", "postgres", "journal", "tail", "codec"] {
            assert!(
                !text.contains(&format!("store::{backend}")),
                "{} names store::{backend}",
                file.display()
            );
        }
    }
}

#[test]
fn names_are_read_from_paths_and_groups() {
    let text = "use crate::engine::{Reply, Request};\nuse crate::{ids::{self, Kind}, records};\n/// [`crate::store::Store`]";
    let found: Vec<String> = named(text).into_iter().collect();
    assert_eq!(found, ["engine", "ids", "records", "store"]);
}
