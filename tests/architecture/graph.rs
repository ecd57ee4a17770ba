//! The module tree, the file graph built from the paths each file names, and its cycles.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::tokens::{ident, is, tokenize, Tok};

pub(crate) struct Module {
    pub(crate) file: String,
    pub(crate) parent: Option<usize>,
    children: BTreeMap<String, usize>,
    uses: Vec<UseItem>,
}

#[derive(Clone, Debug)]
struct UseItem {
    path: Vec<String>,
    /// The name the item is bound to; `None` for a glob or `as _`.
    name: Option<String>,
    glob: bool,
    line: u32,
}

struct FileTokens {
    toks: Vec<(Tok, u32)>,
    /// The module each token belongs to (a file's inline modules get their own).
    module: Vec<usize>,
}

pub(crate) struct Graph {
    pub(crate) modules: Vec<Module>,
    files: BTreeMap<String, FileTokens>,
    /// (from, to) → where the first reference was made: "line N: `crate::x::Y`".
    pub(crate) edges: BTreeMap<(String, String), String>,
}

impl Graph {
    /// Builds the module tree from `lib.rs` and the file graph; `files` maps paths relative to
    /// `src/` (with `/`) to their text.
    ///
    /// # Panics
    ///
    /// If a `mod` declaration names a file that is not in `files`.
    pub(crate) fn build(files: &BTreeMap<String, String>) -> Graph {
        let mut g = Graph {
            modules: vec![Module {
                file: "lib.rs".into(),
                parent: None,
                children: BTreeMap::new(),
                uses: Vec::new(),
            }],
            files: BTreeMap::new(),
            edges: BTreeMap::new(),
        };
        g.load("lib.rs", 0, files);
        g.collect_uses();
        g.collect_edges();
        g
    }

    pub(crate) fn reached(&self, file: &str) -> bool {
        self.files.contains_key(file)
    }

    fn load(&mut self, file: &str, root: usize, files: &BTreeMap<String, String>) {
        let text = files
            .get(file)
            .unwrap_or_else(|| panic!("src/{file}: declared by `mod` but not found"));
        let toks = tokenize(text);
        let (dir, name) = match file.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), file),
        };
        // Where `mod x;` looks for x: beside lib.rs/mod.rs, under foo/ for foo.rs.
        let child_dir = if matches!(name, "lib.rs" | "mod.rs" | "main.rs") {
            dir.clone()
        } else {
            format!("{dir}{}/", name.trim_end_matches(".rs"))
        };
        let mut module = Vec::with_capacity(toks.len());
        // (module, brace depth at which its block closes, directory for its `mod x;`)
        let mut stack = vec![(root, 0usize, child_dir, dir)];
        let mut depth = 0usize;
        let mut path_attr: Option<String> = None;
        let mut pending = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let (cur, _, cur_dir, attr_dir) = stack.last().unwrap().clone();
            module.push(cur);
            match &toks[i].0 {
                Tok::Punct('#')
                    if is(toks.get(i + 1), &Tok::Punct('['))
                        && ident(toks.get(i + 2)) == Some("path")
                        && is(toks.get(i + 3), &Tok::Punct('=')) =>
                {
                    if let Some((Tok::Str(p), _)) = toks.get(i + 4) {
                        path_attr = Some(p.clone());
                    }
                }
                Tok::Ident(kw) if kw == "mod" => {
                    if let Some(child) = ident(toks.get(i + 1)) {
                        let child = child.to_string();
                        let id = self.modules.len();
                        let after = toks.get(i + 2).map(|t| t.0.clone());
                        let file_of_child = match after {
                            Some(Tok::Punct(';')) => Some(match path_attr.take() {
                                Some(p) => format!("{attr_dir}{p}"),
                                None => {
                                    let flat = format!("{cur_dir}{child}.rs");
                                    if files.contains_key(&flat) {
                                        flat
                                    } else {
                                        format!("{cur_dir}{child}/mod.rs")
                                    }
                                }
                            }),
                            Some(Tok::Punct('{')) => None,
                            _ => {
                                i += 1;
                                continue;
                            }
                        };
                        self.modules.push(Module {
                            file: file_of_child.clone().unwrap_or_else(|| file.to_string()),
                            parent: Some(cur),
                            children: BTreeMap::new(),
                            uses: Vec::new(),
                        });
                        self.modules[cur].children.insert(child.clone(), id);
                        module.push(cur);
                        match file_of_child {
                            Some(f) => {
                                pending.push((f, id));
                                module.push(cur);
                                i += 3;
                            }
                            None => {
                                module.push(id);
                                depth += 1;
                                let inner = format!("{cur_dir}{child}/");
                                stack.push((id, depth, inner.clone(), inner));
                                i += 3;
                            }
                        }
                        continue;
                    }
                }
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    if stack.len() > 1 && stack.last().unwrap().1 == depth {
                        stack.pop();
                    }
                    depth = depth.saturating_sub(1);
                    path_attr = None;
                }
                Tok::Punct(';') => path_attr = None,
                _ => {}
            }
            i += 1;
        }
        module.truncate(toks.len());
        self.files
            .insert(file.to_string(), FileTokens { toks, module });
        for (f, id) in pending {
            self.load(&f, id, files);
        }
    }

    fn collect_uses(&mut self) {
        for ft in self.files.values() {
            let t = &ft.toks;
            let mut i = 0;
            while i < t.len() {
                if ident(t.get(i)) == Some("use") && starts_statement(t, i) {
                    let line = t[i].1;
                    let mut j = i + 1;
                    let mut items = Vec::new();
                    use_tree(t, &mut j, Vec::new(), line, &mut items);
                    self.modules[ft.module[i]].uses.extend(items);
                    i = j.max(i + 1);
                } else {
                    i += 1;
                }
            }
        }
    }

    fn collect_edges(&mut self) {
        let mut edges = BTreeMap::new();
        let add =
            |edges: &mut BTreeMap<(String, String), String>, from: &str, to: &str, why: String| {
                if from != to {
                    edges
                        .entry((from.to_string(), to.to_string()))
                        .or_insert(why);
                }
            };
        for m in 0..self.modules.len() {
            for u in &self.modules[m].uses {
                if let Some(target) = self.resolve(m, &u.path, 0) {
                    let from = &self.modules[m].file;
                    let shown = if u.glob {
                        format!("{}::*", u.path.join("::"))
                    } else {
                        u.path.join("::")
                    };
                    add(
                        &mut edges,
                        from,
                        &self.modules[target].file,
                        format!("line {}: use {shown}", u.line),
                    );
                }
            }
        }
        for (file, ft) in &self.files {
            let t = &ft.toks;
            let mut i = 0;
            while i < t.len() {
                if ident(t.get(i)) == Some("use") && starts_statement(t, i) {
                    while i < t.len() && !is(t.get(i), &Tok::Punct(';')) {
                        i += 1;
                    }
                    continue;
                }
                // `pub(in crate::x)` restricts visibility; it is not a dependency.
                if ident(t.get(i)) == Some("pub") && is(t.get(i + 1), &Tok::Punct('(')) {
                    while i < t.len() && !is(t.get(i), &Tok::Punct(')')) {
                        i += 1;
                    }
                    continue;
                }
                let starts_path = ident(t.get(i)).is_some()
                    && is(t.get(i + 1), &Tok::PathSep)
                    && !(i > 0 && is(t.get(i - 1), &Tok::PathSep));
                if !starts_path {
                    i += 1;
                    continue;
                }
                let mut segs = vec![ident(t.get(i)).unwrap().to_string()];
                let mut j = i + 1;
                while is(t.get(j), &Tok::PathSep) {
                    match ident(t.get(j + 1)) {
                        Some(s) => segs.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                if let Some(target) = self.resolve(ft.module[i], &segs, 0) {
                    add(
                        &mut edges,
                        file,
                        &self.modules[target].file,
                        format!("line {}: {}", t[i].1, segs.join("::")),
                    );
                }
                i = j;
            }
        }
        self.edges = edges;
    }

    /// The deepest module of this crate that `path`, written in module `m`, names; `None` when
    /// it starts outside the crate (std, a dependency, a local variable's type).
    fn resolve(&self, m: usize, path: &[String], depth: u32) -> Option<usize> {
        let (first, rest) = path.split_first()?;
        let mut cur = match first.as_str() {
            "crate" => 0,
            "super" => self.modules[m].parent?,
            "self" => m,
            name => self.lookup(m, name, depth)?,
        };
        for seg in rest {
            match seg.as_str() {
                "super" => cur = self.modules[cur].parent?,
                "self" => {}
                s => match self.modules[cur].children.get(s) {
                    Some(&c) => cur = c,
                    None => break,
                },
            }
        }
        Some(cur)
    }

    /// A bare name in module `m`: a child module, a `use` binding, or either of those in a
    /// glob-imported module (`use super::*`).
    fn lookup(&self, m: usize, name: &str, depth: u32) -> Option<usize> {
        if depth > 8 {
            return None;
        }
        if let Some(&c) = self.modules[m].children.get(name) {
            return Some(c);
        }
        let uses = &self.modules[m].uses;
        if let Some(u) = uses.iter().find(|u| u.name.as_deref() == Some(name)) {
            return self.resolve(m, &u.path, depth + 1);
        }
        for u in uses.iter().filter(|u| u.glob) {
            if let Some(g) = self.resolve_module(m, &u.path, depth + 1) {
                if g != m {
                    if let Some(found) = self.lookup(g, name, depth + 1) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    /// Like `resolve`, but only when every segment of `path` is a module.
    fn resolve_module(&self, m: usize, path: &[String], depth: u32) -> Option<usize> {
        let target = self.resolve(m, path, depth)?;
        // A module path ends at a module named by its last segment (or `self`/`super`/`crate`).
        match path.last().map(String::as_str) {
            Some("self" | "super" | "crate") => Some(target),
            Some(last) => {
                let parent = self.modules[target].parent?;
                let named = self.modules[parent].children.get(last) == Some(&target);
                named.then_some(target)
            }
            None => None,
        }
    }

    /// The module whose file `file` is (not one of its inline modules).
    pub(crate) fn root_of(&self, file: &str) -> Option<usize> {
        self.modules
            .iter()
            .position(|m| m.file == file && m.parent.is_none_or(|p| self.modules[p].file != file))
    }

    /// The child of `p` that `m` is, or is inside of; `None` when `m` is not below `p`.
    fn unit_under(&self, p: usize, mut m: usize) -> Option<usize> {
        loop {
            let parent = self.modules[m].parent?;
            if parent == p {
                return Some(m);
            }
            m = parent;
        }
    }

    /// The cycles that break the rule, ignoring `allowed` edges; each is listed by its files
    /// (the first is not repeated at the end).
    ///
    /// A cycle is allowed when it runs through the file of the module enclosing all its files
    /// (a module's own file may use, and be used by, its descendants: parent ↔ child, or
    /// `mod.rs` re-exporting what a child uses by `super::`). So for each module `p`, the
    /// files below it other than its own must have no cycle reaching into two of its
    /// children: a strongly connected component over two children holds such a cycle, and
    /// for each of its edges between children the shortest cycle through it is reported.
    pub(crate) fn cycles(&self, allowed: &[(String, String)]) -> Vec<Vec<String>> {
        let edges: Vec<(&str, &str)> = self
            .edges
            .keys()
            .filter(|(a, b)| !allowed.iter().any(|(x, y)| x == a && y == b))
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let mut found = BTreeSet::new();
        for p in 0..self.modules.len() {
            // The files strictly below p, each with the child of p it belongs to.
            let unit: BTreeMap<&str, usize> = self
                .files
                .keys()
                .filter(|f| **f != self.modules[p].file)
                .filter_map(|f| Some((f.as_str(), self.unit_under(p, self.root_of(f)?)?)))
                .collect();
            if unit.len() < 2 {
                continue;
            }
            let mut adj: BTreeMap<&str, Vec<&str>> =
                unit.keys().map(|&f| (f, Vec::new())).collect();
            for &(a, b) in &edges {
                if unit.contains_key(a) && unit.contains_key(b) {
                    adj.get_mut(a).unwrap().push(b);
                }
            }
            for scc in strongly_connected(&adj) {
                let inside: BTreeSet<&str> = scc.iter().copied().collect();
                for &a in &scc {
                    for &b in &adj[a] {
                        if inside.contains(b) && unit[a] != unit[b] {
                            let path = shortest_path(&adj, &inside, b, a);
                            let mut cycle: Vec<String> = std::iter::once(a)
                                .chain(path.into_iter().take_while(|&x| x != a))
                                .map(String::from)
                                .collect();
                            // Start at the smallest name, so a cycle is reported once.
                            let min = (0..cycle.len()).min_by_key(|&k| &cycle[k]).unwrap();
                            cycle.rotate_left(min);
                            found.insert(cycle);
                        }
                    }
                }
            }
        }
        found.into_iter().collect()
    }

    pub(crate) fn describe(&self, cycle: &[String]) -> String {
        let mut s = format!(
            "cycle: {} -> src/{}",
            cycle
                .iter()
                .map(|f| format!("src/{f}"))
                .collect::<Vec<_>>()
                .join(" -> "),
            cycle[0]
        );
        for k in 0..cycle.len() {
            let (a, b) = (&cycle[k], &cycle[(k + 1) % cycle.len()]);
            let why = &self.edges[&(a.clone(), b.clone())];
            s.push_str(&format!("\n  src/{a} -> src/{b}: {why}"));
        }
        s
    }
}

/// `use` at token `i` begins a use declaration (not `x.use` or a `use` inside a path).
fn starts_statement(t: &[(Tok, u32)], i: usize) -> bool {
    i == 0
        || matches!(
            &t[i - 1].0,
            Tok::Punct(';' | '{' | '}' | ']' | ')') | Tok::Ident(_)
        ) && !is(t.get(i - 1), &Tok::PathSep)
}

/// Parses one use tree at `*i`, appending each leaf with `prefix` in front.
fn use_tree(
    t: &[(Tok, u32)],
    i: &mut usize,
    prefix: Vec<String>,
    line: u32,
    out: &mut Vec<UseItem>,
) {
    let mut path = prefix;
    loop {
        match t.get(*i).map(|x| &x.0) {
            Some(Tok::PathSep) => *i += 1,
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                *i += 1;
                if is(t.get(*i), &Tok::PathSep) {
                    *i += 1;
                    continue;
                }
                let mut name = path.last().cloned();
                if ident(t.get(*i)) == Some("as") {
                    name = ident(t.get(*i + 1)).map(String::from);
                    *i += 2;
                }
                if path.last().map(String::as_str) == Some("self") {
                    path.pop();
                    if name.as_deref() == Some("self") {
                        name = path.last().cloned();
                    }
                }
                if name.as_deref() == Some("_") {
                    name = None;
                }
                out.push(UseItem {
                    path,
                    name,
                    glob: false,
                    line,
                });
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(UseItem {
                    path,
                    name: None,
                    glob: true,
                    line,
                });
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match t.get(*i).map(|x| &x.0) {
                        None => return,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        _ => {
                            let before = *i;
                            use_tree(t, i, path.clone(), line, out);
                            if *i == before {
                                *i += 1;
                            }
                        }
                    }
                }
            }
            _ => return,
        }
    }
}

/// Tarjan's algorithm; components in no particular order.
fn strongly_connected<'a>(adj: &BTreeMap<&'a str, Vec<&'a str>>) -> Vec<Vec<&'a str>> {
    struct State<'a> {
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<&'a str>>,
    }
    fn visit<'a>(v: &'a str, adj: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in &adj[v] {
            if !s.index.contains_key(w) {
                visit(w, adj, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            s.out.push(comp);
        }
    }
    let mut s = State {
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for &v in adj.keys() {
        if !s.index.contains_key(v) {
            visit(v, adj, &mut s);
        }
    }
    s.out
}

/// Breadth-first from `from` to `to` inside `inside`: the files after `from`, ending at `to`.
fn shortest_path<'a>(
    adj: &BTreeMap<&'a str, Vec<&'a str>>,
    inside: &BTreeSet<&'a str>,
    from: &'a str,
    to: &'a str,
) -> Vec<&'a str> {
    let mut prev: HashMap<&str, &str> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(v) = queue.pop_front() {
        if v == to {
            break;
        }
        for &w in &adj[v] {
            if inside.contains(w) && seen.insert(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    let mut path = vec![to];
    let mut v = to;
    while v != from {
        v = prev[v];
        path.push(v);
    }
    path.reverse();
    path
}
