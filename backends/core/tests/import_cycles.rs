//! No import circle among the source files of this crate.
//!
//! File A depends on file B when A names (in a `use` or in a `crate::`/`super::`/`self::`
//! path) an item that B defines. A path is resolved to the file that *defines* the item:
//! through re-exports (`pub use`, globs included), so that `crate::Result`, re-exported by
//! `lib.rs`, counts as a use of `error.rs`, and a module re-exporting its children is not a
//! dependency by itself. `mod` declarations are not dependencies either. Test code (files
//! named `tests.rs`, loom models, and everything from a `#[cfg(test)]` module onwards in a
//! file) is left out: it may look at anything.
//!
//! What this cannot see: a method called on a value whose type was obtained elsewhere (an
//! `impl` block split across files calls its other half without naming a path). The check
//! is about names, as a reader meets them at the top of a file.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path relative to the crate root: `[]` is `lib.rs`, `["runtime", "timer"]`
/// `runtime/timer.rs` or `runtime/timer/mod.rs`.
type ModPath = Vec<String>;

struct Module {
    file: PathBuf,
    /// Names of items defined here (types, traits, functions, constants, macros, modules).
    defines: BTreeSet<String>,
    /// `pub use` re-exports: name -> full path it stands for, and glob sources.
    reexports: BTreeMap<String, ModPath>,
    globs: Vec<ModPath>,
    /// Every path named, made absolute (crate-relative).
    uses: Vec<ModPath>,
}

fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments, up to the first `#[cfg(test)]` module.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let test_attr = t.starts_with("#[cfg(test)]") || t.starts_with("#[cfg(all(test");
        if test_attr
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod ") && n.contains('{'))
        {
            break;
        }
        let line = match t.find("//") {
            Some(i) => &t[..i],
            None => t,
        };
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// Expands one `use` tree (`a::{b, c::d as e, f::*}`) into full paths.
fn expand(prefix: &[String], tree: &str, out: &mut Vec<(ModPath, Option<String>)>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let mut base = prefix.to_vec();
        base.extend(
            head.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&base, &inner[start..i], out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[start..], out);
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim().to_string())),
        None => (tree, None),
    };
    let mut full = prefix.to_vec();
    full.extend(path.split("::").map(|s| s.trim().to_string()));
    out.push((full, alias));
}

/// Makes `path` (as written in module `here`) crate-relative; `None` for other crates.
fn absolute(here: &ModPath, path: &[String]) -> Option<ModPath> {
    let mut out = here.clone();
    let mut rest = path;
    match rest.first().map(String::as_str) {
        Some("crate") => {
            out.clear();
            rest = &rest[1..];
        }
        Some("self") => rest = &rest[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                out.pop();
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    out.extend(rest.iter().cloned());
    Some(out)
}

fn parse(here: &ModPath, file: PathBuf, text: &str) -> Module {
    let code = code_of(text);
    let mut module = Module {
        file,
        defines: BTreeSet::new(),
        reexports: BTreeMap::new(),
        globs: Vec::new(),
        uses: Vec::new(),
    };
    // `use` statements, whole (they may span lines).
    let mut rest = code.as_str();
    while let Some(i) = find_use(rest) {
        let after = &rest[i..];
        let end = after.find(';').unwrap_or(after.len());
        let stmt = &after[..end];
        let public = rest[..i].trim_end().ends_with("pub")
            || rest[..i].trim_end().ends_with(')') && rest[..i].contains("pub(");
        let tree = stmt.trim_start_matches("use").trim();
        let mut paths = Vec::new();
        expand(&[], tree, &mut paths);
        for (path, alias) in paths {
            let Some(abs) = absolute(here, &path) else {
                continue;
            };
            let last = abs.last().cloned().unwrap_or_default();
            if public {
                if last == "*" {
                    module.globs.push(abs[..abs.len() - 1].to_vec());
                } else {
                    let name = alias.unwrap_or_else(|| last.clone());
                    module.reexports.insert(name, abs.clone());
                }
            }
            module.uses.push(abs);
        }
        rest = &after[end..];
    }
    // Inline paths: `crate::a::b`, `super::x`.
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let parts: Vec<String> = path
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if let Some(abs) = absolute(here, &parts) {
                module.uses.push(abs);
            }
        }
    }
    // Definitions.
    for line in code.lines() {
        let mut words = line
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '!'))
            .filter(|w| !w.is_empty())
            .skip_while(|w| matches!(*w, "pub" | "crate" | "super" | "unsafe" | "async"));
        if let (Some(kind), Some(name)) = (words.next(), words.next()) {
            if matches!(
                kind,
                "struct" | "enum" | "trait" | "fn" | "type" | "const" | "static" | "mod" | "union"
            ) || kind == "macro_rules!"
            {
                module.defines.insert(name.to_string());
            }
        }
    }
    module
}

fn find_use(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = s[from..].find("use ") {
        let at = from + i;
        let before = s[..at].chars().last();
        if before.map_or(true, |c| {
            c.is_whitespace() || c == ')' || c == '{' || c == ';'
        }) {
            return Some(at);
        }
        from = at + 4;
    }
    None
}

/// The file defining the item `path` names, if it is in this crate.
fn resolve(mods: &BTreeMap<ModPath, Module>, path: &[String], depth: usize) -> Option<ModPath> {
    if depth > 16 {
        return None;
    }
    // The longest prefix that is a module.
    let mut n = path.len();
    while n > 0 && !mods.contains_key(&path[..n]) {
        n -= 1;
    }
    let module = &path[..n];
    let Some(name) = path.get(n) else {
        return Some(module.to_vec());
    };
    let m = &mods[module];
    if name == "*" || m.defines.contains(name) {
        return Some(module.to_vec());
    }
    if let Some(target) = m.reexports.get(name) {
        let mut target = target.clone();
        target.extend(path[n + 1..].iter().cloned());
        return resolve(mods, &target, depth + 1);
    }
    for glob in &m.globs {
        let mut target = glob.clone();
        target.extend(path[n..].iter().cloned());
        if let Some(found) = resolve(mods, &target, depth + 1) {
            if found != *glob || mods[glob].defines.contains(name) {
                return Some(found);
            }
        }
    }
    // A name this module neither defines nor re-exports (a variant, a method, a field):
    // it belongs to the module named.
    Some(module.to_vec())
}

#[test]
fn no_import_circle_among_core_files() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut mods = BTreeMap::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if name == "tests.rs" || name == "loom_models.rs" {
            continue;
        }
        let here = module_path(&src, &file);
        let text = std::fs::read_to_string(&file).unwrap();
        mods.insert(here.clone(), parse(&here, file, &text));
    }
    assert!(mods.len() > 10, "found only {} source files", mods.len());
    // Edges between files, each with one path that makes it.
    let mut edges: BTreeMap<ModPath, BTreeMap<ModPath, String>> = BTreeMap::new();
    for (here, m) in &mods {
        for used in &m.uses {
            if let Some(target) = resolve(&mods, used, 0) {
                if target != *here {
                    edges
                        .entry(here.clone())
                        .or_default()
                        .entry(target)
                        .or_insert_with(|| used.join("::"));
                }
            }
        }
    }
    let cycles = strongly_connected(&mods, &edges);
    let mut report = String::new();
    for cycle in &cycles {
        report.push_str("\n  circle:");
        for m in cycle {
            report.push_str(&format!(
                "\n    {}",
                mods[m].file.strip_prefix(&src).unwrap().display()
            ));
            for (to, via) in edges.get(m).into_iter().flatten() {
                if cycle.contains(to) {
                    report.push_str(&format!("\n      -> {} (via {via})", to.join("::")));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "import circles among backends/core/src files:{report}"
    );
}

/// The groups of more than one file that reach each other (Tarjan's algorithm).
fn strongly_connected(
    mods: &BTreeMap<ModPath, Module>,
    edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>,
) -> Vec<Vec<ModPath>> {
    struct Tarjan<'a> {
        edges: &'a BTreeMap<ModPath, BTreeMap<ModPath, String>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        next: usize,
        out: Vec<Vec<ModPath>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: &ModPath) {
            self.index.insert(v.clone(), self.next);
            self.low.insert(v.clone(), self.next);
            self.next += 1;
            self.stack.push(v.clone());
            self.on_stack.insert(v.clone());
            let targets: Vec<ModPath> = self
                .edges
                .get(v)
                .map(|e| e.keys().cloned().collect())
                .unwrap_or_default();
            for w in targets {
                if !self.index.contains_key(&w) {
                    self.visit(&w);
                    let low = self.low[v].min(self.low[&w]);
                    self.low.insert(v.clone(), low);
                } else if self.on_stack.contains(&w) {
                    let low = self.low[v].min(self.index[&w]);
                    self.low.insert(v.clone(), low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(&w);
                    let done = w == *v;
                    group.push(w);
                    if done {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.out.push(group);
                }
            }
        }
    }
    let mut t = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for m in mods.keys() {
        if !t.index.contains_key(m) {
            t.visit(m);
        }
    }
    t.out
}
