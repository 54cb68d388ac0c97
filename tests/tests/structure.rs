//! The code structure stays honest: no import cycle between the modules of any crate,
//! at any folder level; no production source file over 400 lines; no production function over 60
//! lines. No cluster needed: every crate's sources are parsed with `syn`.
//!
//! Cycles. For each crate root of each workspace member (`src/lib.rs`, `src/main.rs`,
//! `src/bin/*.rs`, a `path` in `[lib]`/`[[bin]]`; a binary is a crate of its own, so its
//! `portcullis_x::` paths name another crate) the module tree is built from the files (`foo.rs`,
//! `foo/mod.rs`, inline `mod foo { .. }`, `#[path]`). Every path in the code — `use` trees
//! (grouped, renamed, globs, `pub(crate) use`), and paths in expressions, types, patterns,
//! attributes, and `crate::`/`super::`/`self::`/`a::b` sequences in macro token streams, which
//! syn does not parse — is resolved like rustc does: `crate::`, `super::`, `self::`, a child
//! module, a name imported by a `use` (glob imports included), and through re-exports. A
//! reference from code in module S to module T is an edge between the two children of their
//! lowest common ancestor that hold S and T (a reference to one's own ancestor or descendant is
//! none). Every strongly connected component of more than one module is a cycle, reported with
//! one `file:line` per edge. Test code is ignored: `#[cfg(test)]` items, `#[test]` functions,
//! `tests.rs` files and `tests/` folders of modules, and the package-level `tests/`, `benches/`
//! and `examples/`. Doc comments (intra-doc links) are not references.
//!
//! Sizes. A production file's lines minus its inline `#[cfg(test)] mod` blocks; a function's
//! lines from its `fn` line to its closing brace. The `tests` member is the integration tests'
//! harness (control plane, Dex, processes, fixtures): test code, so it is held to the cycle rule
//! only.

use proc_macro2::{Delimiter, Span, TokenStream, TokenTree};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::visit::{self, Visit};

const MAX_FILE_LINES: usize = 400;
const MAX_FN_LINES: usize = 60;
/// The workspace member that holds the test harness, not production code.
const TEST_HARNESS: &str = "tests/";

/// True for a file of production code (not the test harness).
fn is_production(file: &Path) -> bool {
    !file.starts_with(TEST_HARNESS)
}

// ---------------------------------------------------------------------------------------------
// The module tree of one crate.

/// A name brought into a module's scope by a `use`, or a glob.
#[derive(Debug, Clone)]
struct Import {
    /// The name it binds (`None` for a glob or `as _`).
    name: Option<String>,
    glob: bool,
    /// The path as written, resolved from the module that holds the `use`.
    segs: Vec<String>,
}

/// A path written in a module's own code (not in its child modules).
#[derive(Debug, Clone)]
struct Ref {
    segs: Vec<String>,
    line: usize,
}

#[derive(Debug)]
struct Module {
    name: String,
    parent: Option<usize>,
    children: BTreeMap<String, usize>,
    /// The file that holds this module's items.
    file: PathBuf,
    imports: Vec<Import>,
    refs: Vec<Ref>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct FnSize {
    file: PathBuf,
    line: usize,
    name: String,
    lines: usize,
}

#[derive(Debug, PartialEq, Eq, Clone)]
struct FileSize {
    file: PathBuf,
    total: usize,
    /// `total` minus the inline `#[cfg(test)] mod` blocks.
    production: usize,
}

#[derive(Debug)]
struct CrateTree {
    /// e.g. `gateway/src/lib.rs`.
    root: PathBuf,
    modules: Vec<Module>,
    fns: Vec<FnSize>,
    files: Vec<FileSize>,
    /// Things the checker followed but a person should know about (`#[path]`, `#[macro_use]`).
    notes: Vec<String>,
}

type Reader<'a> = &'a dyn Fn(&Path) -> Option<String>;

fn line_of(span: Span) -> usize {
    span.start().line
}

/// `#[cfg(P)]` where P can only hold under `cfg(test)`.
fn cfg_implies_test(meta: &syn::Meta) -> bool {
    fn pred(tokens: TokenStream) -> bool {
        // The predicate is `test`, or `all(..)` with one such predicate.
        let tts: Vec<TokenTree> = tokens.into_iter().collect();
        match tts.as_slice() {
            [TokenTree::Ident(i)] => i == "test",
            [TokenTree::Ident(i), TokenTree::Group(g)] if i == "all" => {
                split_commas(g.stream()).into_iter().any(pred)
            }
            _ => false,
        }
    }
    match meta {
        syn::Meta::List(list) if list.path.is_ident("cfg") => pred(list.tokens.clone()),
        _ => false,
    }
}

fn split_commas(tokens: TokenStream) -> Vec<TokenStream> {
    let mut parts = vec![TokenStream::new()];
    for tt in tokens {
        match &tt {
            TokenTree::Punct(p) if p.as_char() == ',' => parts.push(TokenStream::new()),
            _ => {
                if let Some(last) = parts.last_mut() {
                    last.extend([tt]);
                }
            }
        }
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// Test code: `#[cfg(test)]` (or `cfg(all(test, ..))`), or a `#[test]`/`#[tokio::test]` function.
fn is_test_code(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        cfg_implies_test(&a.meta)
            || (a.path().segments.last().is_some_and(|s| s.ident == "test")
                && a.path().segments.len() <= 2)
    })
}

fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// A file holds its child modules' files in its own folder (`lib.rs`, `main.rs`, `mod.rs`, a
/// binary root, a `#[path]` file) or in a folder named after it (`foo.rs` → `foo/`).
fn child_dir_of(file: &Path, mod_rs: bool) -> PathBuf {
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    if mod_rs || file.file_name().is_some_and(|n| n == "mod.rs") {
        dir
    } else {
        dir.join(file.file_stem().unwrap_or_default())
    }
}

/// Flattens a `use` tree into (full path, bound name, is glob, line).
fn flatten_use(
    tree: &syn::UseTree,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>, bool, usize)>,
) {
    let with = |s: &syn::Ident| {
        let mut v = prefix.to_vec();
        v.push(s.to_string());
        v
    };
    match tree {
        syn::UseTree::Path(p) => flatten_use(&p.tree, &with(&p.ident), out),
        syn::UseTree::Name(n) if n.ident == "self" => {
            out.push((
                prefix.to_vec(),
                prefix.last().cloned(),
                false,
                line_of(n.ident.span()),
            ));
        }
        syn::UseTree::Name(n) => out.push((
            with(&n.ident),
            Some(n.ident.to_string()),
            false,
            line_of(n.ident.span()),
        )),
        syn::UseTree::Rename(r) => {
            let segs = if r.ident == "self" {
                prefix.to_vec()
            } else {
                with(&r.ident)
            };
            let name = (r.rename != "_").then(|| r.rename.to_string());
            out.push((segs, name, false, line_of(r.ident.span())));
        }
        syn::UseTree::Glob(g) => {
            out.push((prefix.to_vec(), None, true, line_of(g.star_token.spans[0])))
        }
        syn::UseTree::Group(g) => g.items.iter().for_each(|t| flatten_use(t, prefix, out)),
    }
}

/// Paths in a macro's tokens, which syn leaves unparsed: `crate::a`, `$crate::a`, `super::a`,
/// `self::a`, `a::b` (two or more segments unless it starts with `crate`/`super`/`self`), and
/// `crate::{a, b::c}` groups. A path after `::` or `$x` is not one.
fn scan_tokens(tokens: TokenStream, out: &mut Vec<Ref>) {
    let tts: Vec<TokenTree> = tokens.into_iter().collect();
    let is_colon2 = |i: usize| {
        matches!((tts.get(i), tts.get(i + 1)), (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && b.as_char() == ':')
    };
    let mut i = 0;
    while i < tts.len() {
        match &tts[i] {
            TokenTree::Group(g) => scan_tokens(g.stream(), out),
            TokenTree::Ident(first) => {
                let after_colons = i >= 2 && is_colon2(i - 2);
                let after_dollar =
                    i >= 1 && matches!(&tts[i - 1], TokenTree::Punct(p) if p.as_char() == '$');
                let first_s = first.to_string();
                let keyword = matches!(first_s.as_str(), "crate" | "super" | "self");
                if !after_colons && (!after_dollar || first_s == "crate") && is_colon2(i + 1) {
                    let mut segs = vec![first_s];
                    let mut j = i + 1;
                    let mut group = None;
                    while is_colon2(j) {
                        match tts.get(j + 2) {
                            Some(TokenTree::Ident(id)) => {
                                segs.push(id.to_string());
                                j += 3;
                            }
                            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                                group = Some(g.stream());
                                j += 3;
                                break;
                            }
                            _ => break,
                        }
                    }
                    let line = line_of(first.span());
                    if let Some(inner) = group {
                        let mut flat = Vec::new();
                        match syn::parse2::<syn::UseTree>(quote_group(inner)) {
                            Ok(tree) => flatten_use(&tree, &segs, &mut flat),
                            Err(_) => flat.push((segs.clone(), None, false, line)),
                        }
                        out.extend(
                            flat.into_iter()
                                .map(|(segs, _, _, line)| Ref { segs, line }),
                        );
                    } else if keyword || segs.len() >= 2 {
                        out.push(Ref { segs, line });
                    }
                    i = j;
                    continue;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// `{ a, b::c }` as the tokens of a braced use tree.
fn quote_group(inner: TokenStream) -> TokenStream {
    let mut g = proc_macro2::Group::new(Delimiter::Brace, inner);
    g.set_span(Span::call_site());
    TokenStream::from(TokenTree::Group(g))
}

/// Collects a module's references, `use` imports in nested blocks, and function sizes, skipping
/// test code and doc comments. Its top-level `mod` items are handled by the tree builder.
struct Collector<'a> {
    file: &'a Path,
    refs: Vec<Ref>,
    imports: Vec<Import>,
    fns: Vec<FnSize>,
    /// The `impl` type, to name methods.
    owner: Option<String>,
}

impl Collector<'_> {
    fn add_use(&mut self, item: &syn::ItemUse) {
        if item.leading_colon.is_some() {
            return; // `use ::krate::..`: another crate.
        }
        let mut flat = Vec::new();
        flatten_use(&item.tree, &[], &mut flat);
        for (segs, name, glob, line) in flat {
            self.refs.push(Ref {
                segs: segs.clone(),
                line,
            });
            self.imports.push(Import { name, glob, segs });
        }
    }

    fn add_fn(&mut self, sig: &syn::Signature, block: &syn::Block) {
        let line = line_of(sig.fn_token.span);
        let end = line_of(block.brace_token.span.close());
        let name = match &self.owner {
            Some(owner) => format!("{owner}::{}", sig.ident),
            None => sig.ident.to_string(),
        };
        self.fns.push(FnSize {
            file: self.file.to_path_buf(),
            line,
            name,
            lines: end + 1 - line,
        });
    }
}

impl<'ast> Visit<'ast> for Collector<'_> {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs: &[syn::Attribute] = match item {
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Macro(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            syn::Item::Union(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            _ => &[],
        };
        if is_test_code(attrs) {
            return;
        }
        match item {
            syn::Item::Use(u) => {
                self.add_use(u);
                for a in &u.attrs {
                    self.visit_attribute(a);
                }
            }
            _ => visit::visit_item(self, item),
        }
    }

    fn visit_item_impl(&mut self, item: &'ast syn::ItemImpl) {
        let ty = &item.self_ty;
        let previous = self.owner.replace(quote_type(ty));
        visit::visit_item_impl(self, item);
        self.owner = previous;
    }

    fn visit_item_trait(&mut self, item: &'ast syn::ItemTrait) {
        let previous = self.owner.replace(item.ident.to_string());
        visit::visit_item_trait(self, item);
        self.owner = previous;
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        let previous = self.owner.take();
        self.add_fn(&item.sig, &item.block);
        visit::visit_item_fn(self, item);
        self.owner = previous;
    }

    fn visit_impl_item(&mut self, item: &'ast syn::ImplItem) {
        let attrs: &[syn::Attribute] = match item {
            syn::ImplItem::Const(i) => &i.attrs,
            syn::ImplItem::Fn(i) => &i.attrs,
            syn::ImplItem::Type(i) => &i.attrs,
            syn::ImplItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !is_test_code(attrs) {
            visit::visit_impl_item(self, item);
        }
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        self.add_fn(&item.sig, &item.block);
        let previous = self.owner.take();
        visit::visit_impl_item_fn(self, item);
        self.owner = previous;
    }

    fn visit_trait_item(&mut self, item: &'ast syn::TraitItem) {
        let attrs: &[syn::Attribute] = match item {
            syn::TraitItem::Const(i) => &i.attrs,
            syn::TraitItem::Fn(i) => &i.attrs,
            syn::TraitItem::Type(i) => &i.attrs,
            syn::TraitItem::Macro(i) => &i.attrs,
            _ => &[],
        };
        if !is_test_code(attrs) {
            visit::visit_trait_item(self, item);
        }
    }

    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.add_fn(&item.sig, block);
        }
        let previous = self.owner.take();
        visit::visit_trait_item_fn(self, item);
        self.owner = previous;
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        if !is_test_code(&local.attrs) {
            visit::visit_local(self, local);
        }
    }

    fn visit_stmt_macro(&mut self, m: &'ast syn::StmtMacro) {
        if !is_test_code(&m.attrs) {
            visit::visit_stmt_macro(self, m);
        }
    }

    fn visit_field(&mut self, f: &'ast syn::Field) {
        if !is_test_code(&f.attrs) {
            visit::visit_field(self, f);
        }
    }

    fn visit_variant(&mut self, v: &'ast syn::Variant) {
        if !is_test_code(&v.attrs) {
            visit::visit_variant(self, v);
        }
    }

    fn visit_arm(&mut self, arm: &'ast syn::Arm) {
        if !is_test_code(&arm.attrs) {
            visit::visit_arm(self, arm);
        }
    }

    fn visit_attribute(&mut self, attr: &'ast syn::Attribute) {
        // Doc comments (and their intra-doc links) are not references.
        if attr.path().is_ident("doc") {
            return;
        }
        match &attr.meta {
            syn::Meta::Path(p) => self.visit_path(p),
            syn::Meta::List(list) => {
                self.visit_path(&list.path);
                scan_tokens(list.tokens.clone(), &mut self.refs);
            }
            syn::Meta::NameValue(nv) => {
                self.visit_path(&nv.path);
                self.visit_expr(&nv.value);
            }
        }
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.visit_path(&mac.path);
        scan_tokens(mac.tokens.clone(), &mut self.refs);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none()
            && let Some(first) = path.segments.first()
        {
            let segs = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.refs.push(Ref {
                segs,
                line: line_of(first.ident.span()),
            });
        }
        visit::visit_path(self, path);
    }
}

fn quote_type(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default(),
        syn::Type::Reference(r) => quote_type(&r.elem),
        _ => "_".to_owned(),
    }
}

/// Where a file module's source lives: `#[path]`, else `dir/name.rs`, else `dir/name/mod.rs`.
fn module_file(dir: &Path, name: &str, read: Reader) -> Option<(PathBuf, String)> {
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
    .into_iter()
    .find_map(|p| read(&p).map(|src| (p, src)))
}

struct Builder<'a> {
    read: Reader<'a>,
    /// The folder of the crate root, to tell a module's `tests/` folder.
    src_dir: PathBuf,
    tree: CrateTree,
}

impl Builder<'_> {
    fn parse(file: &Path, src: &str) -> Result<syn::File, String> {
        syn::parse_file(src).map_err(|e| {
            format!(
                "{}:{}: does not parse: {e}",
                file.display(),
                line_of(e.span())
            )
        })
    }

    fn record_size(&mut self, file: &Path, src: &str, parsed: &syn::File) {
        let total = src.lines().count();
        let test_blocks: usize = test_mod_blocks(&parsed.items)
            .iter()
            .map(|(a, b)| b + 1 - a)
            .sum();
        let production = total.saturating_sub(test_blocks);
        self.tree.files.push(FileSize {
            file: file.to_path_buf(),
            total,
            production,
        });
    }

    fn is_test_file(&self, file: &Path) -> bool {
        let rel = file.strip_prefix(&self.src_dir).unwrap_or(file);
        rel.file_name().is_some_and(|n| n == "tests.rs")
            || rel.components().any(|c| c.as_os_str() == "tests")
    }

    /// Adds module `id`'s items: its references and imports, its functions, its child modules.
    /// `child_dir` is where its `mod x;` files live; `in_file` is false inside an inline module.
    fn fill(
        &mut self,
        id: usize,
        items: &[syn::Item],
        file: &Path,
        child_dir: &Path,
        in_file: bool,
    ) -> Result<(), String> {
        let mut c = Collector {
            file,
            refs: Vec::new(),
            imports: Vec::new(),
            fns: Vec::new(),
            owner: None,
        };
        for item in items {
            let syn::Item::Mod(m) = item else {
                c.visit_item(item);
                continue;
            };
            if is_test_code(&m.attrs) {
                continue;
            }
            for a in &m.attrs {
                c.visit_attribute(a);
            }
            let name = m.ident.to_string();
            if m.attrs.iter().any(|a| a.path().is_ident("macro_use")) {
                self.tree.notes.push(format!(
                    "{}:{}: #[macro_use] mod {name}: its macros are used without paths, which the checker cannot see",
                    file.display(),
                    line_of(m.ident.span())
                ));
            }
            let path = path_attr(&m.attrs);
            if let Some(p) = &path {
                self.tree.notes.push(format!(
                    "{}:{}: #[path = \"{p}\"] mod {name}: followed",
                    file.display(),
                    line_of(m.ident.span())
                ));
            }
            let child = self.tree.modules.len();
            let (child_file, child_items, grandchild_dir, child_in_file) = match &m.content {
                Some((_, inner)) => {
                    let dir = match &path {
                        Some(p) => child_dir.join(p),
                        None => child_dir.join(&name),
                    };
                    (file.to_path_buf(), inner.clone(), dir, false)
                }
                None => {
                    let found = match &path {
                        Some(p) => {
                            // Outside inline modules, relative to the file's folder.
                            let base = if in_file {
                                file.parent().map(Path::to_path_buf).unwrap_or_default()
                            } else {
                                child_dir.to_path_buf()
                            };
                            let f = base.join(p);
                            (self.read)(&f).map(|src| (f, src))
                        }
                        None => module_file(child_dir, &name, self.read),
                    };
                    let Some((f, src)) = found else {
                        return Err(format!(
                            "{}:{}: mod {name}; has no file in {}",
                            file.display(),
                            line_of(m.ident.span()),
                            child_dir.display()
                        ));
                    };
                    if self.is_test_file(&f) {
                        continue;
                    }
                    let parsed = Self::parse(&f, &src)?;
                    if is_test_code(&parsed.attrs) {
                        continue;
                    }
                    self.record_size(&f, &src, &parsed);
                    let dir = child_dir_of(&f, path.is_some());
                    (f, parsed.items, dir, true)
                }
            };
            self.tree.modules.push(Module {
                name: name.clone(),
                parent: Some(id),
                children: BTreeMap::new(),
                file: child_file.clone(),
                imports: Vec::new(),
                refs: Vec::new(),
            });
            self.tree.modules[id].children.insert(name, child);
            self.fill(
                child,
                &child_items,
                &child_file,
                &grandchild_dir,
                child_in_file,
            )?;
        }
        let module = &mut self.tree.modules[id];
        module.refs.extend(c.refs);
        module.imports.extend(c.imports);
        self.tree.fns.extend(c.fns);
        Ok(())
    }
}

/// The (first, last) lines of each inline `#[cfg(test)] mod .. { .. }` among `items`.
fn test_mod_blocks(items: &[syn::Item]) -> Vec<(usize, usize)> {
    items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Mod(m) if is_test_code(&m.attrs) => {
                let first = m
                    .attrs
                    .iter()
                    .map(|a| line_of(a.pound_token.spans[0]))
                    .chain([line_of(m.mod_token.span)])
                    .min()?;
                let last = m
                    .content
                    .as_ref()
                    .map(|(brace, _)| line_of(brace.span.close()))?;
                Some((first, last))
            }
            _ => None,
        })
        .collect()
}

/// The module tree of the crate whose root file is `root` (a path as it should be reported).
fn load_crate(root: &Path, read: Reader) -> Result<CrateTree, String> {
    let src = read(root).ok_or_else(|| format!("{}: cannot read", root.display()))?;
    let src_dir = root.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut b = Builder {
        read,
        src_dir: src_dir.clone(),
        tree: CrateTree {
            root: root.to_path_buf(),
            modules: vec![Module {
                name: "crate".to_owned(),
                parent: None,
                children: BTreeMap::new(),
                file: root.to_path_buf(),
                imports: Vec::new(),
                refs: Vec::new(),
            }],
            fns: Vec::new(),
            files: Vec::new(),
            notes: Vec::new(),
        },
    };
    let parsed = Builder::parse(root, &src)?;
    b.record_size(root, &src, &parsed);
    b.fill(0, &parsed.items, root, &src_dir, true)?;
    Ok(b.tree)
}

// ---------------------------------------------------------------------------------------------
// Path resolution and cycles.

/// Where a path lands: a module, and whether the whole path named that module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Landing {
    module: usize,
    exact: bool,
}

const MAX_DEPTH: u32 = 12;

impl CrateTree {
    /// The modules a path written in module `from` lands in: the deepest module it names, and
    /// through a re-export (`pub use`) the module that one names as well.
    fn resolve(&self, from: usize, segs: &[String], depth: u32) -> Vec<Landing> {
        let mut out = Vec::new();
        let Some(first) = segs.first() else {
            return out;
        };
        if depth > MAX_DEPTH {
            return out;
        }
        let (start, rest) = match first.as_str() {
            "crate" | "$crate" => (0, &segs[1..]),
            "self" => (from, &segs[1..]),
            "super" => {
                let mut m = from;
                let mut i = 0;
                while segs.get(i).is_some_and(|s| s == "super") {
                    let Some(p) = self.modules[m].parent else {
                        return out;
                    };
                    m = p;
                    i += 1;
                }
                (m, &segs[i..])
            }
            "Self" => return out,
            name => match self.modules[from].children.get(name) {
                Some(&c) => (c, &segs[1..]),
                None => {
                    self.via_imports(from, name, &segs[1..], depth + 1, &mut out);
                    return out;
                }
            },
        };
        self.walk(start, rest, depth, &mut out);
        out
    }

    fn walk(&self, mut m: usize, rest: &[String], depth: u32, out: &mut Vec<Landing>) {
        for (i, seg) in rest.iter().enumerate() {
            if let Some(&c) = self.modules[m].children.get(seg) {
                m = c;
                continue;
            }
            out.push(Landing {
                module: m,
                exact: false,
            });
            self.via_imports(m, seg, &rest[i + 1..], depth + 1, out);
            return;
        }
        out.push(Landing {
            module: m,
            exact: true,
        });
    }

    /// `name` (then `rest`) as brought into module `m` by a `use`, else by a glob import.
    fn via_imports(
        &self,
        m: usize,
        name: &str,
        rest: &[String],
        depth: u32,
        out: &mut Vec<Landing>,
    ) {
        if depth > MAX_DEPTH {
            return;
        }
        let imports = &self.modules[m].imports;
        let mut named = false;
        for imp in imports
            .iter()
            .filter(|i| !i.glob && i.name.as_deref() == Some(name))
        {
            named = true;
            let segs: Vec<String> = imp.segs.iter().chain(rest).cloned().collect();
            out.extend(self.resolve(m, &segs, depth + 1));
        }
        if named {
            return;
        }
        for imp in imports.iter().filter(|i| i.glob) {
            for g in self.resolve(m, &imp.segs, depth + 1) {
                if !g.exact || g.module == m {
                    continue;
                }
                // A module is named by a path of two segments or more (`b::f`); a lone `b` is a
                // value or a type (say a local variable), which a glob does not make a module.
                match self.modules[g.module].children.get(name) {
                    Some(&c) if !rest.is_empty() => self.walk(c, rest, depth + 1, out),
                    Some(_) => {}
                    None => self.via_imports(g.module, name, rest, depth + 1, out),
                }
            }
        }
    }

    /// Root-first chain of module ids down to `m`.
    fn chain(&self, mut m: usize) -> Vec<usize> {
        let mut v = vec![m];
        while let Some(p) = self.modules[m].parent {
            v.push(p);
            m = p;
        }
        v.reverse();
        v
    }

    fn display(&self, m: usize) -> String {
        let names: Vec<&str> = self
            .chain(m)
            .iter()
            .map(|&i| self.modules[i].name.as_str())
            .collect();
        names.join("::")
    }

    /// Sibling edges: (parent, from child, to child) → the places that cause them.
    fn edges(&self) -> BTreeMap<(usize, usize, usize), BTreeSet<(PathBuf, usize)>> {
        let mut edges: BTreeMap<_, BTreeSet<_>> = BTreeMap::new();
        for (id, module) in self.modules.iter().enumerate() {
            let from_chain = self.chain(id);
            for r in &module.refs {
                for landing in self.resolve(id, &r.segs, 0) {
                    let to_chain = self.chain(landing.module);
                    let common = from_chain
                        .iter()
                        .zip(&to_chain)
                        .take_while(|(a, b)| a == b)
                        .count();
                    // An ancestor or a descendant (or itself) is no sibling.
                    if common == from_chain.len() || common == to_chain.len() {
                        continue;
                    }
                    let key = (from_chain[common - 1], from_chain[common], to_chain[common]);
                    edges
                        .entry(key)
                        .or_default()
                        .insert((module.file.clone(), r.line));
                }
            }
        }
        edges
    }

    /// Every cycle: strongly connected components of more than one sibling, each with the
    /// edges inside it.
    fn cycles(&self) -> Vec<Cycle> {
        let edges = self.edges();
        let mut by_parent: BTreeMap<usize, BTreeMap<usize, BTreeSet<usize>>> = BTreeMap::new();
        for &(p, a, b) in edges.keys() {
            by_parent
                .entry(p)
                .or_default()
                .entry(a)
                .or_default()
                .insert(b);
        }
        let mut cycles = Vec::new();
        for (parent, graph) in by_parent {
            for component in strongly_connected(&graph) {
                let inside: Vec<(String, String, PathBuf, usize, usize)> = edges
                    .iter()
                    .filter(|((p, a, b), _)| {
                        *p == parent && component.contains(a) && component.contains(b)
                    })
                    .filter_map(|((_, a, b), places)| {
                        let (file, line) = places.first()?.clone();
                        Some((
                            self.modules[*a].name.clone(),
                            self.modules[*b].name.clone(),
                            file,
                            line,
                            places.len(),
                        ))
                    })
                    .collect();
                let mut members: Vec<String> = component
                    .iter()
                    .map(|&m| self.modules[m].name.clone())
                    .collect();
                members.sort();
                cycles.push(Cycle {
                    crate_root: self.root.clone(),
                    parent: self.display(parent),
                    members,
                    edges: inside,
                });
            }
        }
        cycles
    }
}

#[derive(Debug)]
struct Cycle {
    crate_root: PathBuf,
    /// `crate`, `crate::proxy`, ..
    parent: String,
    members: Vec<String>,
    /// (from, to, file, line, how many places in all).
    edges: Vec<(String, String, PathBuf, usize, usize)>,
}

impl std::fmt::Display for Cycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: cycle among the modules of `{}`: {}",
            self.crate_root.display(),
            self.parent,
            self.members.join(" <-> ")
        )?;
        for (a, b, file, line, n) in &self.edges {
            let more = if *n > 1 {
                format!(" (and {} more)", n - 1)
            } else {
                String::new()
            };
            writeln!(f, "    {a} -> {b}: {}:{line}{more}", file.display())?;
        }
        Ok(())
    }
}

/// Components of more than one node (mutual reachability; the graphs are small).
fn strongly_connected(graph: &BTreeMap<usize, BTreeSet<usize>>) -> Vec<BTreeSet<usize>> {
    let reach = |start: usize| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for &m in graph.get(&n).into_iter().flatten() {
                if seen.insert(m) {
                    stack.push(m);
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<usize> = graph
        .iter()
        .flat_map(|(a, bs)| std::iter::once(*a).chain(bs.iter().copied()))
        .collect();
    let reaches: BTreeMap<usize, BTreeSet<usize>> = nodes.iter().map(|&n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for &n in &nodes {
        if done.contains(&n) {
            continue;
        }
        let component: BTreeSet<usize> = nodes
            .iter()
            .copied()
            .filter(|&m| m == n || (reaches[&n].contains(&m) && reaches[&m].contains(&n)))
            .collect();
        done.extend(component.iter().copied());
        if component.len() > 1 {
            out.push(component);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The workspace.

fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// `members = [..]` of the root manifest.
fn workspace_members(manifest: &str) -> Vec<String> {
    let Some(start) = manifest.find("members") else {
        return Vec::new();
    };
    let rest = &manifest[start..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else {
        return Vec::new();
    };
    rest[open + 1..close]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The crate roots of a member, relative to the workspace: the library, the binaries by
/// convention (`src/main.rs`, `src/bin/x.rs`, `src/bin/x/main.rs`) and by `path` in the manifest.
fn crate_roots(ws: &Path, member: &str) -> Vec<PathBuf> {
    let mut roots = BTreeSet::new();
    let m = Path::new(member);
    for conventional in ["src/lib.rs", "src/main.rs"] {
        if ws.join(m).join(conventional).is_file() {
            roots.insert(m.join(conventional));
        }
    }
    if let Ok(entries) = std::fs::read_dir(ws.join(m).join("src/bin")) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "rs") {
                roots.insert(m.join("src/bin").join(e.file_name()));
            } else if p.join("main.rs").is_file() {
                roots.insert(m.join("src/bin").join(e.file_name()).join("main.rs"));
            }
        }
    }
    let manifest = std::fs::read_to_string(ws.join(m).join("Cargo.toml")).unwrap_or_default();
    let mut section = "";
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if (section == "[lib]" || section == "[[bin]]")
            && let Some(value) = line
                .strip_prefix("path")
                .and_then(|r| r.trim_start().strip_prefix('='))
        {
            roots.insert(m.join(value.trim().trim_matches('"')));
        }
    }
    roots.into_iter().collect()
}

fn load_workspace() -> Result<Vec<CrateTree>, String> {
    let ws = workspace_root();
    let manifest =
        std::fs::read_to_string(ws.join("Cargo.toml")).map_err(|e| format!("Cargo.toml: {e}"))?;
    let members = workspace_members(&manifest);
    if members.len() < 8 {
        return Err(format!("found only {members:?} as workspace members"));
    }
    let read = |p: &Path| std::fs::read_to_string(ws.join(p)).ok();
    let mut crates = Vec::new();
    for member in &members {
        let roots = crate_roots(&ws, member);
        if roots.is_empty() {
            return Err(format!(
                "{member}: no crate root (src/lib.rs, src/main.rs, src/bin/)"
            ));
        }
        for root in roots {
            crates.push(load_crate(&root, &read)?);
        }
    }
    Ok(crates)
}

fn workspace() -> Vec<CrateTree> {
    match load_workspace() {
        Ok(crates) => crates,
        Err(e) => panic!("cannot read the workspace's sources: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The bars over the real workspace.

#[test]
fn no_module_import_cycles_in_any_crate() {
    let crates = workspace();
    // Not vacuous: the gateway library has its modules and they reference each other.
    let gateway = crates
        .iter()
        .find(|c| c.root == Path::new("gateway/src/lib.rs"));
    assert!(
        gateway.is_some_and(|g| g.modules.len() > 10 && !g.edges().is_empty()),
        "the gateway library was not analysed"
    );
    // `#[path]` and `#[macro_use]` are reported (shown with --nocapture, or with a failure).
    let notes: String = crates
        .iter()
        .flat_map(|c| &c.notes)
        .map(|n| format!("note: {n}\n"))
        .collect();
    eprint!("{notes}");
    let cycles: Vec<Cycle> = crates.iter().flat_map(CrateTree::cycles).collect();
    let report: String = cycles
        .iter()
        .map(ToString::to_string)
        .chain([notes])
        .collect();
    assert!(
        cycles.is_empty(),
        "{} import cycle(s) between sibling modules; each edge names one place that causes it:\n{report}",
        cycles.len()
    );
}

#[test]
fn no_production_file_over_400_lines() {
    let crates = workspace();
    let mut files: Vec<&FileSize> = crates
        .iter()
        .flat_map(|c| &c.files)
        .filter(|f| is_production(&f.file))
        .collect();
    files.sort_by(|a, b| a.file.cmp(&b.file));
    files.dedup_by(|a, b| a.file == b.file);
    assert!(
        files.len() > 50,
        "only {} production files found",
        files.len()
    );
    let over: Vec<String> = files
        .iter()
        .filter(|f| f.production > MAX_FILE_LINES)
        .map(|f| {
            format!(
                "    {}: {} lines ({} with its test module)",
                f.file.display(),
                f.production,
                f.total
            )
        })
        .collect();
    assert!(
        over.is_empty(),
        "{} production file(s) over {MAX_FILE_LINES} lines, not counting inline #[cfg(test)] modules:\n{}",
        over.len(),
        over.join("\n")
    );
}

#[test]
fn no_production_function_over_60_lines() {
    let crates = workspace();
    let mut fns: Vec<&FnSize> = crates
        .iter()
        .flat_map(|c| &c.fns)
        .filter(|f| is_production(&f.file))
        .collect();
    fns.sort();
    fns.dedup();
    assert!(
        fns.len() > 200,
        "only {} production functions found",
        fns.len()
    );
    let over: Vec<String> = fns
        .iter()
        .filter(|f| f.lines > MAX_FN_LINES)
        .map(|f| {
            format!(
                "    {}:{}: fn {}: {} lines",
                f.file.display(),
                f.line,
                f.name,
                f.lines
            )
        })
        .collect();
    assert!(
        over.is_empty(),
        "{} production function(s) over {MAX_FN_LINES} lines, from the fn line to the closing brace:\n{}",
        over.len(),
        over.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The checker itself, on tiny crates in memory.

fn load(files: &[(&str, &str)]) -> CrateTree {
    let map: BTreeMap<PathBuf, String> = files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), (*s).to_owned()))
        .collect();
    let read = |p: &Path| map.get(p).cloned();
    match load_crate(Path::new(files[0].0), &read) {
        Ok(tree) => tree,
        Err(e) => panic!("{e}"),
    }
}

/// Each cycle as "parent: a <-> b" plus its edges as "a -> b @file:line".
fn summary(tree: &CrateTree) -> Vec<String> {
    tree.cycles()
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .edges
                .iter()
                .map(|(a, b, f, l, _)| format!("{a} -> {b} @{}:{l}", f.display()))
                .collect();
            format!(
                "{}: {} [{}]",
                c.parent,
                c.members.join(" <-> "),
                edges.join(", ")
            )
        })
        .collect()
}

#[test]
fn checker_finds_a_two_module_cycle_through_use_and_an_inline_path() {
    let tree = load(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "pub fn g() {\n    let _ = crate::b::f();\n}\n"),
        ("src/b.rs", "use crate::a;\npub fn f() {}\n"),
    ]);
    assert_eq!(
        summary(&tree),
        ["crate: a <-> b [a -> b @src/a.rs:2, b -> a @src/b.rs:1]"]
    );
}

#[test]
fn checker_reads_grouped_uses_and_pub_crate_use() {
    let tree = load(&[
        ("src/lib.rs", "mod a;\nmod d;\nmod e;\n"),
        ("src/a/mod.rs", "pub mod b;\npub mod c;\n"),
        ("src/a/b.rs", "pub fn x() {}\n"),
        ("src/a/c.rs", "pub(crate) use crate::e::Thing;\n"),
        ("src/d.rs", "pub fn y() {}\n"),
        (
            "src/e.rs",
            "use crate::{\n    a::{b, c},\n    d,\n};\npub struct Thing;\n",
        ),
    ]);
    assert_eq!(
        summary(&tree),
        ["crate: a <-> e [a -> e @src/a/c.rs:1, e -> a @src/e.rs:2]"]
    );
    let edges: Vec<String> = tree
        .edges()
        .keys()
        .map(|(_, a, b)| format!("{}->{}", tree.display(*a), tree.display(*b)))
        .collect();
    assert_eq!(
        edges,
        [
            "crate::a->crate::e",
            "crate::e->crate::a",
            "crate::e->crate::d"
        ]
    );
}

#[test]
fn checker_resolves_super_and_finds_a_cycle_one_folder_down_only() {
    let tree = load(&[
        ("src/lib.rs", "mod p;\nmod q;\n"),
        ("src/p.rs", "mod x;\nmod y;\n"),
        (
            "src/p/x.rs",
            "pub fn f() {\n    super::y::g();\n    crate::q::h();\n}\n",
        ),
        ("src/p/y.rs", "use super::x;\npub fn g() {}\n"),
        (
            "src/q.rs",
            "pub fn h() {}\npub fn i() {\n    crate::p::f();\n}\n",
        ),
    ]);
    // x and y loop inside p; p -> q -> p is a cycle at the root too (x calls q, q calls p).
    assert_eq!(
        summary(&tree),
        [
            "crate: p <-> q [p -> q @src/p/x.rs:3, q -> p @src/q.rs:3]",
            "crate::p: x <-> y [x -> y @src/p/x.rs:2, y -> x @src/p/y.rs:1]"
        ]
    );
    // Without q's call back, only the folder-level cycle is left.
    let tree = load(&[
        ("src/lib.rs", "mod p;\n"),
        (
            "src/p/mod.rs",
            "mod x;\nmod y;\nfn up() { crate::p::x::f(); }\n",
        ),
        (
            "src/p/x.rs",
            "pub fn f() { super::y::g(); crate::p::up(); }\n",
        ),
        ("src/p/y.rs", "use super::x;\npub fn g() {}\n"),
    ]);
    assert_eq!(
        summary(&tree),
        ["crate::p: x <-> y [x -> y @src/p/x.rs:1, y -> x @src/p/y.rs:1]"]
    );
}

#[test]
fn checker_ignores_test_code_and_doc_links() {
    let tree = load(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "/// Like [`crate::b::f`], see [crate::b].\npub fn g() {}\n#[cfg(test)]\nfn helper() { crate::b::f(); }\n\
             #[cfg(test)]\nmod tests {\n    use crate::b;\n}\n#[cfg(test)]\nmod more;\nmod inner_tests;\n",
        ),
        ("src/a/inner_tests.rs", "#![cfg(test)]\nuse crate::b::f;\n"),
        ("src/a/more.rs", "use crate::b::f;\n"),
        (
            "src/b.rs",
            "use crate::a::g;\npub fn f() { g() }\n#[test]\nfn t() { crate::a::g(); }\n",
        ),
    ]);
    assert_eq!(summary(&tree), Vec::<String>::new());
    // A module's tests.rs file and tests/ folder are test code however they are declared.
    let tree = load(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "mod tests;\nmod checks;\n"),
        ("src/a/tests.rs", "use crate::b::f;\n"),
        ("src/a/checks/mod.rs", "mod tests;\n"),
        ("src/a/checks/tests/mod.rs", "use crate::b::f;\n"),
        ("src/b.rs", "use crate::a;\npub fn f() {}\n"),
    ]);
    assert_eq!(summary(&tree), Vec::<String>::new());
}

#[test]
fn checker_sees_paths_inside_macros_and_attributes() {
    let tree = load(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\nmod d;\n"),
        (
            "src/a.rs",
            "pub fn g() {\n    println!(\"{}\", crate::b::f());\n}\n",
        ),
        (
            "src/b.rs",
            "macro_rules! m {\n    () => { $crate::a::g() };\n}\npub fn f() -> u8 { m!(); 1 }\n",
        ),
        (
            "src/c.rs",
            "#[serde(with = \"x\")]\n#[my_attr(crate::d::X)]\npub struct S;\n",
        ),
        (
            "src/d.rs",
            "pub struct X;\nfn z() { format!(\"{:?}\", super::c::S); }\n",
        ),
    ]);
    assert_eq!(
        summary(&tree),
        [
            "crate: a <-> b [a -> b @src/a.rs:2, b -> a @src/b.rs:2]",
            "crate: c <-> d [c -> d @src/c.rs:2, d -> c @src/d.rs:2]"
        ]
    );
}

#[test]
fn checker_follows_globs_renames_and_re_exports() {
    // `use super::*` brings the parent's child modules (and imports) into scope.
    let tree = load(&[
        ("src/lib.rs", "mod a;\nmod b;\nuse std::fmt;\n"),
        ("src/a.rs", "use super::*;\nfn g() {\n    b::f();\n}\n"),
        (
            "src/b.rs",
            "use crate::a as other;\npub fn f() {}\nfn h() { other::x(); }\n",
        ),
    ]);
    assert_eq!(
        summary(&tree),
        ["crate: a <-> b [a -> b @src/a.rs:3, b -> a @src/b.rs:1]"]
    );
    // A local variable named like a sibling module is not that module.
    let tree = load(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use super::*;\nfn g(b: u8) -> u8 {\n    b\n}\n"),
        ("src/b.rs", "use crate::a;\n"),
    ]);
    assert_eq!(summary(&tree), Vec::<String>::new());
    // `crate::c::Thing` re-exported from a: b -> c and, through it, b -> a.
    let tree = load(&[
        ("src/lib.rs", "mod a;\nmod b;\nmod c;\n"),
        ("src/a.rs", "pub struct Thing;\nfn g() { crate::b::f(); }\n"),
        (
            "src/b.rs",
            "pub fn f() {}\nfn h() { let _ = crate::c::Thing; }\n",
        ),
        ("src/c.rs", "pub(crate) use crate::a::Thing;\n"),
    ]);
    assert_eq!(
        summary(&tree),
        [
            "crate: a <-> b <-> c [a -> b @src/a.rs:2, b -> a @src/b.rs:2, b -> c @src/b.rs:2, c -> a @src/c.rs:1]"
        ]
    );
}

#[test]
fn checker_finds_module_files_like_rustc() {
    let tree = load(&[
        (
            "src/main.rs",
            "mod p;\nmod q { pub mod r; }\n#[path = \"elsewhere/s.rs\"]\nmod s;\nfn main() { portcullis_x::p::f(); }\n",
        ),
        ("src/p/mod.rs", "pub mod x;\n"),
        ("src/p/x.rs", "mod deeper;\n"),
        ("src/p/x/deeper.rs", "pub fn f() { crate::q::r::g(); }\n"),
        ("src/q/r.rs", "pub fn g() { crate::s::h(); }\n"),
        ("src/elsewhere/s.rs", "pub fn h() { crate::p::x::f(); }\n"),
    ]);
    let names: Vec<String> = (0..tree.modules.len()).map(|m| tree.display(m)).collect();
    assert_eq!(
        names,
        [
            "crate",
            "crate::p",
            "crate::p::x",
            "crate::p::x::deeper",
            "crate::q",
            "crate::q::r",
            "crate::s"
        ]
    );
    assert_eq!(summary(&tree).len(), 1, "{:?}", summary(&tree));
    assert!(
        summary(&tree)[0].starts_with("crate: p <-> q <-> s ["),
        "{:?}",
        summary(&tree)
    );
    assert_eq!(
        tree.notes,
        ["src/main.rs:4: #[path = \"elsewhere/s.rs\"] mod s: followed"]
    );
    // A binary's `portcullis_x::` paths name the library, not its own modules.
    let tree = load(&[
        ("src/main.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "fn f() { portcullis_x::b::g(); }\n"),
        ("src/b.rs", "use crate::a;\n"),
    ]);
    assert_eq!(summary(&tree), Vec::<String>::new());
}

#[test]
fn checker_measures_functions_and_files() {
    let body = |n: usize| "    let _x = 1;\n".repeat(n);
    let items = |n: usize| "const _: u8 = 1;\n".repeat(n);
    // 61 lines from `fn` to `}` (59 body lines), then exactly 60.
    let src = format!(
        "pub fn long() {{\n{}}}\n\nimpl S {{\n    fn ok(&self) {{\n{}    }}\n}}\n",
        body(59),
        body(58)
    );
    let tree = load(&[("src/lib.rs", &src)]);
    let sizes: Vec<(String, usize, usize)> = tree
        .fns
        .iter()
        .map(|f| (f.name.clone(), f.line, f.lines))
        .collect();
    assert_eq!(
        sizes,
        [("long".to_owned(), 1, 61), ("S::ok".to_owned(), 64, 60)]
    );
    // A test function, however long, is not counted.
    let src = format!(
        "#[cfg(test)]\nmod tests {{\n    fn long() {{\n{}    }}\n}}\n#[test]\nfn t() {{\n{}}}\n",
        body(70),
        body(70)
    );
    assert!(load(&[("src/lib.rs", &src)]).fns.is_empty());
    // 401 lines of production code is over; 380 plus an 80-line test module is not.
    let tree = load(&[("src/lib.rs", &items(401))]);
    assert_eq!(
        tree.files,
        [FileSize {
            file: "src/lib.rs".into(),
            total: 401,
            production: 401
        }]
    );
    let src = format!(
        "{}#[cfg(test)]\nmod tests {{\n{}}}\n",
        items(380),
        items(78)
    );
    let tree = load(&[("src/lib.rs", &src)]);
    assert_eq!(
        tree.files,
        [FileSize {
            file: "src/lib.rs".into(),
            total: 461,
            production: 380
        }]
    );
}

#[test]
fn checker_reads_cfg_predicates() {
    let attr = |s: &str| -> syn::Attribute {
        match syn::parse_str::<syn::DeriveInput>(&format!("{s} struct S;")) {
            Ok(d) => d.attrs[0].clone(),
            Err(e) => panic!("{e}"),
        }
    };
    assert!(is_test_code(&[attr("#[cfg(test)]")]));
    assert!(is_test_code(&[attr("#[cfg(all(unix, test))]")]));
    assert!(is_test_code(&[attr("#[tokio::test]")]));
    assert!(!is_test_code(&[attr("#[cfg(not(test))]")]));
    assert!(!is_test_code(&[attr("#[cfg(any(test, feature = \"x\"))]")]));
}

#[test]
fn checker_reads_the_workspace_members() {
    let manifest = "[workspace]\nresolver = \"3\"\nmembers = [\"crds\", \"core\", \"cli\"]\n\n[workspace.dependencies]\nx = { path = \"x\" }\n";
    assert_eq!(workspace_members(manifest), ["crds", "core", "cli"]);
}

// ---------------------------------------------------------------------------------------------
// The docs name files that exist.

/// Every repository path the docs name in backticks (`gateway/src/router.rs`, a folder ending
/// in `/`, or `{a,b}` alternatives), expanded.
fn doc_paths(text: &str) -> Vec<String> {
    const TOP: [&str; 13] = [
        "crds/",
        "images/",
        "core/",
        "protocol/",
        "runtime/",
        "gateway/",
        "operator/",
        "cli/",
        "tests/",
        "charts/",
        "hack/",
        "e2e/",
        "docs/",
    ];
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_./{},-".contains(c);
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| TOP.iter().any(|top| span.starts_with(top)) && span.chars().all(allowed))
        .flat_map(expand_braces)
        .collect()
}

fn expand_braces(path: &str) -> Vec<String> {
    let (Some(open), Some(close)) = (path.find('{'), path.find('}')) else {
        return vec![path.to_owned()];
    };
    path[open + 1..close]
        .split(',')
        .flat_map(|alt| expand_braces(&format!("{}{alt}{}", &path[..open], &path[close + 1..])))
        .collect()
}

#[test]
fn doc_paths_are_found_and_expanded() {
    assert_eq!(
        doc_paths("see `gateway/src/{a,b}.rs` and `core/` but not `kubectl get` or `x/y.rs`"),
        ["gateway/src/a.rs", "gateway/src/b.rs", "core/"]
    );
}

#[test]
fn every_file_the_docs_name_exists() {
    let ws = workspace_root();
    let mut docs: Vec<PathBuf> = ["README.md", "BENCHMARKS.md"].map(PathBuf::from).into();
    let dir = std::fs::read_dir(ws.join("docs")).expect("docs/");
    docs.extend(
        dir.filter_map(Result::ok)
            .map(|e| Path::new("docs").join(e.file_name()))
            .filter(|p| p.extension().is_some_and(|x| x == "md")),
    );
    let mut named = 0;
    let mut missing = Vec::new();
    for doc in &docs {
        let text = std::fs::read_to_string(ws.join(doc)).expect("readable doc");
        for path in doc_paths(&text) {
            named += 1;
            if !ws.join(&path).exists() {
                missing.push(format!("    {}: {path}", doc.display()));
            }
        }
    }
    assert!(named > 50, "only {named} paths found in the docs");
    assert!(
        missing.is_empty(),
        "the docs name files that do not exist:\n{}",
        missing.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The gateway's layers.

/// The gateway library's top-level modules, top layer first. A module may use its own layer
/// and those below it, never one above; every top-level module must be placed here, so a new
/// one is put in its layer on purpose.
const GATEWAY_LAYERS: &[&[&str]] = &[
    &["startup"],
    &["router", "ops"],
    &["serve", "login"],
    &["access", "access_log"],
    &["gateway"],
    &["sessions"],
    &["state"],
    &[
        "idp",
        "http",
        "proxy",
        "metrics",
        "tokens",
        "cookies",
        "clock",
        "settings",
        "signing",
        "config",
        "hex",
        "rate_limit",
        "identity_cache",
        "audit",
    ],
];

/// Each reference from a top-level module to one in a layer above it, as `from -> to (file:line)`,
/// and each top-level module that has no layer.
fn layer_violations(tree: &CrateTree, layers: &[&[&str]]) -> Vec<String> {
    let layer_of = |name: &str| layers.iter().position(|layer| layer.contains(&name));
    let Some(root) = tree.modules.iter().position(|m| m.parent.is_none()) else {
        return vec!["no crate root".to_owned()];
    };
    let mut found: Vec<String> = tree.modules[root]
        .children
        .keys()
        .filter(|name| layer_of(name).is_none())
        .map(|name| format!("{name}: in no layer"))
        .collect();
    for ((parent, from, to), places) in tree.edges() {
        if parent != root {
            continue;
        }
        let (from, to) = (&tree.modules[from].name, &tree.modules[to].name);
        if let (Some(a), Some(b)) = (layer_of(from), layer_of(to))
            && b < a
        {
            for (file, line) in places {
                found.push(format!("{from} -> {to} ({}:{line})", file.display()));
            }
        }
    }
    found
}

#[test]
fn checker_finds_a_reference_to_a_layer_above() {
    let tree = load(&[
        ("src/lib.rs", "mod top; mod bottom; mod stray;"),
        ("src/top.rs", "pub fn f() { crate::bottom::g(); }"),
        (
            "src/bottom.rs",
            "pub fn g() {}\npub fn h() { crate::top::f(); }",
        ),
        ("src/stray.rs", ""),
    ]);
    assert_eq!(
        layer_violations(&tree, &[&["top"], &["bottom"]]),
        ["stray: in no layer", "bottom -> top (src/bottom.rs:2)"]
    );
}

#[test]
fn the_gateway_modules_only_use_their_own_layer_and_those_below() {
    let crates = workspace();
    let gateway = crates
        .iter()
        .find(|c| c.root == Path::new("gateway/src/lib.rs"))
        .expect("the gateway library");
    let violations = layer_violations(gateway, GATEWAY_LAYERS);
    assert!(
        violations.is_empty(),
        "gateway modules reaching a layer above them (or in no layer):\n    {}",
        violations.join("\n    ")
    );
}
