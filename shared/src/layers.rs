//! The layers of the crate (its top doc) checked over the source: every `crate::` and `super::` path
//! of every file, outside its tests, must lead to its own layer or one below, and no file may reach
//! itself again through such paths (no import cycle).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Layers from the bottom up, by the first segment of a module path.
const LAYERS: &[(&str, &[&str])] = &[
    ("support", &["support"]),
    ("store", &["store"]),
    ("runtime", &["runtime"]),
    ("core", &["domain"]),
    ("integrations", &["integrations"]),
    ("surface", &["api", "pages"]),
    ("wiring", &["functions", "entry"]),
];

/// What the crate root re-exports, by the module that defines it.
const ROOT_EXPORTS: &[(&str, &str)] = &[
    ("Context", "runtime::context"),
    ("Config", "support::config"),
    ("ApiError", "support::error"),
    ("ErrorBody", "support::error"),
];

fn layer_of(module: &str) -> usize {
    let first = module.split("::").next().unwrap_or_default();
    LAYERS
        .iter()
        .position(|(_, tops)| tops.contains(&first))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer: add its folder to LAYERS"))
}

/// `integrations/lti/mod.rs` → `integrations::lti`.
fn module_of(relative: &Path) -> String {
    let path = relative.with_extension("");
    let mut parts: Vec<String> = path.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// A file's code without its test module and plain comments (doc comments stay: their links name
/// modules too).
fn code_of(source: &str) -> String {
    let tests = source
        .match_indices("#[cfg(test)]")
        .map(|(at, _)| at)
        .find(|&at| source[at + "#[cfg(test)]".len()..].trim_start().starts_with("mod "));
    let source = &source[..tests.unwrap_or(source.len())];
    source.lines().map(code_of_line).collect::<Vec<_>>().join("\n")
}

fn code_of_line(line: &str) -> &str {
    let doc = ["///", "//!"].iter().any(|d| line.trim_start().starts_with(d));
    if doc { line } else { line.split("//").next().unwrap_or_default() }
}

/// Expands a use tree (`a::{b, c::{d}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    let Some(open) = tree.find('{') else { return vec![tree] };
    let (head, body) = (&tree[..open], &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())]);
    let (mut items, mut depth, mut current) = (Vec::new(), 0, String::new());
    for c in body.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    items.push(current);
    items.iter().filter(|i| !i.is_empty()).flat_map(|i| expand(&format!("{head}{i}"))).collect()
}

/// The paths a file names, relative to the crate root: `crate::x` as `x`, `super::x` resolved.
fn paths_of(module: &str, code: &str) -> Vec<String> {
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let mut paths = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_string())] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let preceded = rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            let after = &rest[at + prefix.len()..];
            let end = if after.starts_with('{') {
                let mut depth = 0;
                after
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += (c == '{') as i32 - (c == '}') as i32;
                        depth == 0
                    })
                    .map_or(after.len(), |(i, _)| i + 1)
            } else {
                after.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(after.len())
            };
            if !preceded {
                for path in expand(&after[..end]) {
                    let path = path.trim_end_matches(':').replace("::self", "");
                    paths.push(if base.is_empty() { path } else { format!("{base}::{path}") });
                }
            }
            rest = &after[end..];
        }
    }
    paths
}

/// The module a path leads to: its longest prefix that is a module of the crate.
fn resolve(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    if let Some((_, module)) = ROOT_EXPORTS.iter().find(|(name, _)| parts.first() == Some(name)) {
        return Some(module.to_string());
    }
    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|candidate| modules.contains(candidate))
}

/// Every module's imports of other modules (its own submodules and ancestors left out).
fn imports(sources: &BTreeMap<String, String>) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, source)| {
            let targets = paths_of(module, &code_of(source))
                .iter()
                .filter_map(|path| resolve(path, &modules))
                .filter(|target| target != module && !module.starts_with(&format!("{target}::")) && !target.is_empty())
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

/// Imports that go up a layer, as `from -> to`.
fn upward(imports: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    imports
        .iter()
        .flat_map(|(from, targets)| {
            targets.iter().filter(|to| layer_of(to) > layer_of(from)).map(move |to| format!("{from} -> {to}"))
        })
        .collect()
}

/// A cycle of imports, if there is one, as the modules along it.
fn cycle(imports: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit<'a>(
        module: &'a str,
        imports: &'a BTreeMap<String, BTreeSet<String>>,
        done: &mut BTreeSet<&'a str>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| *m == module) {
            return Some(path[at..].iter().chain([&module]).map(|m| m.to_string()).collect());
        }
        if !done.insert(module) {
            return None;
        }
        path.push(module);
        for next in imports.get(module).into_iter().flatten() {
            if let Some(found) = visit(next, imports, done, path) {
                return Some(found);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    imports.keys().find_map(|m| visit(m, imports, &mut done, &mut Vec::new()))
}

fn crate_sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("readable source folder") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).expect("under the root");
                if relative != Path::new("lib.rs") && relative != Path::new("layers.rs") {
                    out.insert(module_of(relative), std::fs::read_to_string(&path).expect("readable source"));
                }
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    walk(&root, &root, &mut sources);
    sources
}

#[test]
fn every_import_goes_down_the_layers_and_none_closes_a_cycle() {
    let sources = crate_sources();
    assert!(sources.len() > 90, "the whole crate is read ({} files)", sources.len());
    let imports = imports(&sources);
    assert!(imports["integrations::lti::flow"].contains("domain::auth::provisioning"), "imports are found");
    assert_eq!(upward(&imports), Vec::<String>::new(), "imports against the layers");
    assert_eq!(cycle(&imports), None, "an import cycle");
}

#[test]
fn an_upward_import_and_a_cycle_are_found() {
    let sources: BTreeMap<String, String> = [
        ("store::users", "use crate::domain::auth::{Role, User};\nuse crate::support::crypto;"),
        ("domain::auth", "pub use crate::store::users::User;"),
        ("integrations::a", "use super::b::Thing;\nfn f() { crate::Context::new(); }"),
        ("integrations::b", "use crate::integrations::a::{self, Other};"),
        ("runtime::context", ""),
        ("support::crypto", "// use crate::domain::auth;\n#[cfg(test)]\nmod tests { use crate::store::users; }"),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_string(), s.to_string()))
    .collect();
    let imports = imports(&sources);
    assert_eq!(upward(&imports), vec!["store::users -> domain::auth".to_string()]);
    assert!(imports["integrations::a"].contains("runtime::context"), "root re-exports resolve");
    assert!(imports["support::crypto"].is_empty(), "comments and tests are not imports");
    let found = cycle(&imports).expect("a cycle");
    assert!(found.contains(&"integrations::a".to_string()) || found.contains(&"store::users".to_string()));
}
