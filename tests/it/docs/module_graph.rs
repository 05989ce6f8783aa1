//! The module graph of `src/` has no circles, as docs/architecture.md says:
//! each top-level module's `crate::…` uses (outside `#[cfg(test)]`) are read
//! from the source and the graph is searched for a cycle. The pure core
//! (`swap`, `admission`) must not reach the shell at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::repo_path;

/// Top-level module → the top-level modules its code uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let src = repo_path("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "main" || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may use anything; the module's own code may not.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let uses = edges.entry(top.clone()).or_default();
        for (index, _) in code.match_indices("crate::") {
            let name: String = code[index + "crate::".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != top {
                uses.insert(name);
            }
        }
    }
    edges
}

fn collect(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// A cycle through `node`, if the search from it finds one.
fn cycle_from(
    node: &str,
    edges: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|n| n == node) {
        let mut cycle = path[start..].to_vec();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in edges.get(node).into_iter().flatten() {
        if let Some(cycle) = cycle_from(next, edges, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn the_module_graph_has_no_circles() {
    let edges = graph();
    assert!(edges.len() >= 10, "modules found: {edges:?}");
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        let cycle = cycle_from(node, &edges, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "a circle in the module graph: {}",
            cycle.unwrap_or_default().join(" -> ")
        );
    }
}

#[test]
fn the_pure_core_uses_only_the_pure_core() {
    let edges = graph();
    assert_eq!(edges["swap"], BTreeSet::new(), "swap uses nothing of ours");
    // `settings` is the pure value-parser family its `PullSecretsArgs`
    // (shared by serve and swap) is read with; it uses nothing of ours.
    assert_eq!(
        edges["admission"],
        BTreeSet::from(["settings".to_owned(), "swap".to_owned()]),
        "admission uses only swap and the settings parsers"
    );
    assert_eq!(
        edges["settings"],
        BTreeSet::new(),
        "settings uses nothing of ours"
    );
}
