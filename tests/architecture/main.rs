//! The dependency rule of docs/ARCHITECTURE.md, enforced: no import cycles between the files
//! of `src/`, except that a parent module's file and its own child's file may use each other.
//!
//! The test reads every module file reachable from `src/lib.rs` (following `mod` declarations
//! and `#[path]`), finds every path that names a module of this crate — `use crate::…`,
//! `use super::…`, grouped `use crate::{a, b::{c, d}}`, and paths in code such as
//! `crate::cache::Cache` or `pool::Pool` (a child module, or a module brought in by `use`) —
//! resolves each to the file defining the deepest module it names, and so builds a
//! file → file graph. Every strongly connected component of that graph must consist of
//! parent ↔ own-child edges only; any other edge inside a component lies on a cycle, and the
//! shortest such cycle is reported with the reference behind each of its edges.
//!
//! No dependency beyond std: a small tokenizer (`tokens.rs`: comments, strings, chars and
//! lifetimes skipped) stands in for a Rust parser; `graph.rs` builds and checks the graph,
//! `checks.rs` tries the checker on small made-up crates.

use std::collections::BTreeMap;
use std::path::Path;

mod graph;
mod tokens;

#[cfg(test)]
mod checks;

use graph::Graph;

/// Edges (`from`, `to`, files relative to `src/`) left out of the graph while the change that
/// removes them is under way. A listed edge that no longer exists fails the test, so the list
/// only shrinks.
const ALLOWED: &[(&str, &str)] = &[];

#[test]
fn no_import_cycles_between_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_dir(&src, &src, &mut files);
    // The binary's crate root reaches the library only through `torii::`.
    files.remove("main.rs");
    let graph = Graph::build(&files);

    let mut problems = Vec::new();
    for f in files.keys().filter(|f| !graph.reached(f)) {
        problems.push(format!(
            "src/{f} is not reached by a `mod` declaration from src/lib.rs"
        ));
    }
    let allowed: Vec<(String, String)> = ALLOWED
        .iter()
        .map(|&(a, b)| (a.to_string(), b.to_string()))
        .collect();
    for (a, b) in &allowed {
        if !graph.edges.contains_key(&(a.clone(), b.clone())) {
            problems.push(format!(
                "allow-listed edge src/{a} -> src/{b} no longer exists: remove it from ALLOWED"
            ));
        }
    }
    for cycle in graph.cycles(&allowed) {
        problems.push(graph.describe(&cycle));
    }
    assert!(
        problems.is_empty(),
        "import cycles between files of src/ (see docs/ARCHITECTURE.md, \"The dependency rule\"):\n\n{}",
        problems.join("\n\n")
    );
}

fn read_dir(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_dir(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(root).unwrap().to_string_lossy();
            let rel = rel.replace(std::path::MAIN_SEPARATOR, "/");
            out.insert(rel, std::fs::read_to_string(&path).unwrap());
        }
    }
}
