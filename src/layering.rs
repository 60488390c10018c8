//! The layering test: every module import of `src/` against the layer order
//! that `ARCHITECTURE.md` lists, so the document and the code cannot drift.
//!
//! An edge is a `use crate::…`/`use super::…` item or an inline `crate::x::`
//! path (comments, doc text and strings are skipped). A module belongs to the
//! layer of its longest listed prefix (a submodule to its parent's unless it is
//! listed itself). An edge fails when it goes up the order; edges inside one
//! layer fail when they close a cycle. There are no exceptions. The CLI
//! binary's modules have no order, only no cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn imports_follow_the_documented_layers_and_close_no_cycle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let layers = documented_layers(&fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md"));
    assert!(!layers.is_empty(), "ARCHITECTURE.md lists no layers under `## Layers`");

    let mut problems = Vec::new();

    let library = Crate::read(&root.join("src"), "lib.rs", &["bin"]);
    let node_of = |module: &str| -> Option<(String, usize)> {
        let mut best: Option<(&String, usize)> = None;
        for (name, layer) in &layers {
            let is_prefix = module == name || module.starts_with(&format!("{name}::"));
            if is_prefix && best.is_none_or(|(b, _)| name.len() > b.len()) {
                best = Some((name, *layer));
            }
        }
        best.map(|(n, l)| (n.clone(), l))
    };
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for edge in &library.edges {
        // lib.rs is the facade (its `pub use` lines name every layer), and
        // what it defines itself are exported macros and `generated`'s shell.
        if edge.from.is_empty() || edge.to.is_empty() {
            continue;
        }
        let (Some((from, from_layer)), Some((to, to_layer))) = (node_of(&edge.from), node_of(&edge.to)) else {
            for module in [&edge.from, &edge.to] {
                if node_of(module).is_none() {
                    problems.push(format!("{}: module {module} is in no layer of ARCHITECTURE.md", edge.file));
                }
            }
            continue;
        };
        if from == to {
            continue;
        }
        if from_layer < to_layer {
            problems.push(format!(
                "{}: {} -> {} goes up ({from} is layer {from_layer}, {to} layer {to_layer})",
                edge.file, edge.from, edge.to
            ));
        }
        graph.entry(from).or_default().insert(to);
    }
    problems.extend(cycles(&graph));

    let cli = Crate::read(&root.join("src/bin/taskpoll"), "main.rs", &[]);
    let mut cli_graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for edge in &cli.edges {
        // The crate root (main.rs) is a node too: a module that uses what
        // main.rs defines closes a circle with it.
        let top = |m: &str| m.split("::").next().filter(|t| !t.is_empty()).unwrap_or("main").to_string();
        let (from, to) = (top(&edge.from), top(&edge.to));
        if from == to {
            continue;
        }
        cli_graph.entry(from).or_default().insert(to);
    }
    problems.extend(cycles(&cli_graph).into_iter().map(|c| format!("src/bin/taskpoll: {c}")));

    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "layering problems:\n  {}", problems.join("\n  "));
}

/// The layers of `ARCHITECTURE.md`: under `## Layers`, items `N. **Name**
/// (`module`, `module::sub`): …`; each backticked name inside the first
/// parentheses is in layer N.
fn documented_layers(doc: &str) -> Vec<(String, usize)> {
    let mut layers = Vec::new();
    let mut inside = false;
    for line in doc.lines() {
        if line.starts_with("## ") {
            inside = line.trim() == "## Layers";
            continue;
        }
        let Some((number, rest)) = line.split_once(". ") else { continue };
        let Ok(number) = number.trim().parse::<usize>() else { continue };
        if !inside {
            continue;
        }
        let Some(open) = rest.find('(') else { continue };
        let Some(close) = rest[open..].find(')') else { continue };
        let names = &rest[open + 1..open + close];
        for (i, part) in names.split('`').enumerate() {
            if i % 2 == 1 {
                layers.push((part.to_string(), number));
            }
        }
    }
    layers
}

/// Every strongly connected group of two or more nodes, as one cycle through
/// its first node.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let nodes: BTreeSet<&String> = graph.keys().chain(graph.values().flatten()).collect();
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.clone()];
        while let Some(n) = stack.pop() {
            for next in graph.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut reported = BTreeSet::new();
    let mut out = Vec::new();
    for node in &nodes {
        if reported.contains(*node) || !reachable[node].contains(*node) {
            continue;
        }
        let group: BTreeSet<String> =
            reachable[node].iter().filter(|other| reachable[other].contains(*node)).cloned().collect();
        reported.extend(group.iter().cloned());
        let members: Vec<&str> = group.iter().map(String::as_str).collect();
        out.push(format!(
            "cycle among {{{}}}, for one: {}",
            members.join(", "),
            shortest_cycle(graph, node, &group).join(" -> ")
        ));
    }
    out
}

/// A shortest path from `start` back to itself inside `group`.
fn shortest_cycle(graph: &BTreeMap<String, BTreeSet<String>>, start: &str, group: &BTreeSet<String>) -> Vec<String> {
    let mut previous: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(n) = queue.pop_front() {
        for next in graph.get(&n).into_iter().flatten().filter(|m| group.contains(*m)) {
            if next == start {
                let mut path = vec![n.clone()];
                while let Some(p) = previous.get(path.last().map_or("", String::as_str)) {
                    path.push(p.clone());
                }
                path.reverse();
                path.push(start.to_string());
                if path.first().map(String::as_str) != Some(start) {
                    path.insert(0, start.to_string());
                }
                return path;
            }
            if !previous.contains_key(next) && next != start {
                previous.insert(next.clone(), n.clone());
                queue.push_back(next.clone());
            }
        }
    }
    vec![start.to_string()]
}

/// One import: the module it is written in, the module it names, the file.
struct Edge {
    file: String,
    from: String,
    to: String,
}

/// The modules of one crate (by their files) and the edges between them.
struct Crate {
    edges: Vec<Edge>,
}

impl Crate {
    fn read(dir: &Path, root_file: &str, skip: &[&str]) -> Self {
        let mut files = Vec::new();
        collect_rs(dir, dir, skip, &mut files);
        let renamed = path_attributes(&fs::read_to_string(dir.join(root_file)).expect("crate root"));
        let mut modules: BTreeMap<String, Vec<Item>> = BTreeMap::new();
        let mut parsed = Vec::new();
        for file in &files {
            let relative = file.strip_prefix(dir).expect("under dir").to_string_lossy().replace('\\', "/");
            let module = if relative == root_file {
                String::new()
            } else if let Some((_, name)) = renamed.iter().find(|(path, _)| *path == relative) {
                name.clone()
            } else {
                relative.trim_end_matches(".rs").trim_end_matches("/mod").replace('/', "::")
            };
            let (items, inline_modules) = items(&code_only(&fs::read_to_string(file).expect("source file")), &module);
            for declared in inline_modules.into_iter().chain([module]) {
                modules.entry(declared).or_default();
            }
            parsed.push((display_path(dir, &relative), items));
        }
        // A path not anchored at `crate`/`super`/`self` names a child module or another crate.
        for (_, items) in &mut parsed {
            items.retain(|item| {
                let child = item.path.get(..=item.module_depth()).map(|p| p.join("::"));
                !item.relative || child.is_some_and(|c| modules.contains_key(&c))
            });
        }
        for (_, items) in &parsed {
            for item in items.iter().filter(|i| i.reexport) {
                modules.entry(item.module.clone()).or_default().push(item.clone());
            }
        }
        let mut edges = Vec::new();
        for (file, items) in parsed {
            for item in items {
                let to = resolve(&modules, &item.path, 0);
                if to != item.module {
                    edges.push(Edge { file: file.clone(), from: item.module, to });
                }
            }
        }
        Crate { edges }
    }
}

/// `src/x.rs` for a file of the library, `src/bin/taskpoll/x.rs` for the CLI.
fn display_path(dir: &Path, relative: &str) -> String {
    if dir.ends_with("bin/taskpoll") { format!("src/bin/taskpoll/{relative}") } else { format!("src/{relative}") }
}

fn collect_rs(dir: &Path, base: &Path, skip: &[&str], out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir).expect("readable dir").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let relative = path.strip_prefix(base).expect("under base").to_string_lossy().to_string();
        if skip.iter().any(|s| relative == *s) {
            continue;
        }
        if path.is_dir() {
            collect_rs(&path, base, skip, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `#[path = "glue.rs"] pub mod __private;` in the crate root: (file, module).
fn path_attributes(root: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in root.match_indices("#[path = \"") {
        let after = &root[i + "#[path = \"".len()..];
        let Some((file, rest)) = after.split_once("\"]") else { continue };
        let rest = rest.trim_start();
        let rest = rest.strip_prefix("pub ").unwrap_or(rest).trim_start();
        let Some(rest) = rest.strip_prefix("mod ") else { continue };
        let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        out.push((file.to_string(), name));
    }
    out
}

/// A path named in one module: the `crate`-relative segments it resolves
/// through, and whether it is a re-export (`pub use`) of that module.
#[derive(Clone, Debug)]
struct Item {
    module: String,
    path: Vec<String>,
    /// `pub use a::b::Name`: `Name` in `module` stands for `path`.
    reexport: bool,
    name: String,
    /// A `use` path not anchored at `crate`, `super` or `self`: a child
    /// module's when its first segment is one, else another crate's.
    relative: bool,
}

impl Item {
    fn module_depth(&self) -> usize {
        if self.module.is_empty() { 0 } else { self.module.matches("::").count() + 1 }
    }
}

/// The module a path names: its longest prefix that is a module, followed
/// through that module's re-exports of the next segment.
fn resolve(modules: &BTreeMap<String, Vec<Item>>, path: &[String], depth: usize) -> String {
    let mut module = String::new();
    let mut used = 0;
    for i in 1..=path.len() {
        let candidate = path[..i].join("::");
        if modules.contains_key(&candidate) {
            module = candidate;
            used = i;
        }
    }
    if depth < 8
        && let Some(next) = path.get(used)
        && let Some(item) =
            modules.get(&module).and_then(|items| items.iter().find(|it| it.reexport && &it.name == next))
    {
        return resolve(modules, &item.path, depth + 1);
    }
    module
}

/// Tokens of code: identifiers, `::`, and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
            continue;
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
        i += 1;
    }
    out
}

/// Every path a file names from `crate`, `super` or `self`, resolved to
/// `crate`-relative segments, with the inline module it is written in; and
/// the inline modules it declares.
fn items(code: &str, file_module: &str) -> (Vec<Item>, Vec<String>) {
    let tokens = tokens(code);
    let mut out = Vec::new();
    let mut declared = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let module_path = |inline: &[(String, usize)]| -> Vec<String> {
        let mut path: Vec<String> = file_module.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
        path.extend(inline.iter().map(|(n, _)| n.clone()));
        path
    };
    while i < tokens.len() {
        let t = tokens[i].as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t == "{") => {
                inline.push((tokens[i + 1].clone(), depth));
                declared.push(module_path(&inline).join("::"));
            }
            "use" => {
                let reexport = i > 0 && (tokens[i - 1] == "pub" || tokens[i - 1] == ")");
                let end = tokens[i..].iter().position(|t| t == ";").map_or(tokens.len(), |p| i + p);
                let here = module_path(&inline);
                for (path, name) in use_tree(&tokens[i + 1..end]) {
                    let module = here.join("::");
                    match anchor(&path, &here) {
                        Some(resolved) => out.push(Item { module, path: resolved, reexport, name, relative: false }),
                        None => {
                            let path = here.iter().chain(&path).cloned().collect();
                            out.push(Item { module, path, reexport, name, relative: true });
                        }
                    }
                }
                i = end;
                continue;
            }
            "crate" | "super" if i == 0 || tokens[i - 1] != "$" && tokens[i - 1] != "::" => {
                let mut path = vec![t.to_string()];
                let mut j = i + 1;
                while tokens.get(j).is_some_and(|t| t == "::")
                    && tokens.get(j + 1).is_some_and(|t| t.chars().all(|c| c.is_alphanumeric() || c == '_'))
                {
                    path.push(tokens[j + 1].clone());
                    j += 2;
                }
                let here = module_path(&inline);
                if path.len() > 1
                    && let Some(resolved) = anchor(&path, &here)
                {
                    out.push(Item {
                        module: here.join("::"),
                        path: resolved,
                        reexport: false,
                        name: String::new(),
                        relative: false,
                    });
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (out, declared)
}

/// `crate::a::b`, `super::super::a` or `self::a` as `crate`-relative segments
/// (`None` for an external crate's path).
fn anchor(path: &[String], here: &[String]) -> Option<Vec<String>> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => Some(here.iter().cloned().chain(path[1..].iter().cloned()).collect()),
        "super" => {
            let ups = path.iter().take_while(|s| *s == "super").count();
            let base = &here[..here.len().saturating_sub(ups)];
            Some(base.iter().cloned().chain(path[ups..].iter().cloned()).collect())
        }
        _ => None,
    }
}

/// The paths of a `use` tree (the tokens between `use` and `;`), each with
/// the name it brings into scope.
fn use_tree(tokens: &[String]) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    walk_tree(tokens, &mut i, Vec::new(), &mut out);
    out
}

fn walk_tree(tokens: &[String], i: &mut usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    let mut path = prefix;
    while *i < tokens.len() {
        let t = tokens[*i].as_str();
        match t {
            "::" => *i += 1,
            "{" => {
                *i += 1;
                loop {
                    walk_tree(tokens, i, path.clone(), out);
                    match tokens.get(*i).map(String::as_str) {
                        Some(",") => *i += 1,
                        Some("}") => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    if tokens.get(*i).is_some_and(|t| t == "}") {
                        *i += 1;
                        return;
                    }
                }
            }
            "," | "}" => break,
            "as" => {
                let name = tokens.get(*i + 1).cloned().unwrap_or_default();
                *i += 2;
                out.push((path, name));
                return;
            }
            "*" => {
                *i += 1;
                out.push((path, "*".into()));
                return;
            }
            "self" if !path.is_empty() => {
                *i += 1;
                let name = path.last().cloned().unwrap_or_default();
                out.push((path, name));
                return;
            }
            _ => {
                path.push(t.to_string());
                *i += 1;
            }
        }
    }
    if let Some(name) = path.last().cloned() {
        out.push((path, name));
    }
}

/// The text with comments, doc text, string and character literals blanked
/// (newlines kept), so only code is read.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && next == Some('*') {
            let mut nesting = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    nesting += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    nesting -= 1;
                    i += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
            continue;
        }
        let raw_start = c == 'r' && matches!(next, Some('"') | Some('#')) && !prev_is_ident(&chars, i);
        if raw_start {
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) == Some(&'"') {
                j += 1;
                while j < chars.len() {
                    if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                        j += 1 + hashes;
                        break;
                    }
                    if chars[j] == '\n' {
                        out.push('\n');
                    }
                    j += 1;
                }
                out.push_str("\"\"");
                i = j;
                continue;
            }
        }
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if chars.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            out.push_str("\"\"");
            i += 1;
            continue;
        }
        if c == '\'' {
            if next == Some('\\') {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                out.push_str("' '");
                i = j + 1;
                continue;
            }
            if chars.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn prev_is_ident(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

#[test]
fn reads_use_trees_paths_and_skips_comments() {
    let code = code_only(
        "use crate::{a::{B, c::D as E}, f};\n// crate::hidden::X\n/// [`crate::doc::Y`]\nlet s = \"crate::text::Z\";\nlet v = crate::g::h(super::i::J);\nmod tests { use super::*; }\n",
    );
    let (found, inline) = items(&code, "m::n");
    let paths: Vec<String> = found.iter().map(|i| i.path.join("::")).collect();
    // `super` inside the inline module is the file's module.
    assert_eq!(paths, ["a::B", "a::c::D", "f", "g::h", "m::i::J", "m::n"].map(String::from));
    assert_eq!(found.last().map(|i| i.module.as_str()), Some("m::n::tests"));
    assert_eq!(inline, ["m::n::tests"]);
}
