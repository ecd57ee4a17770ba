//! The checker, checked on small made-up crates.

use std::collections::BTreeMap;

use crate::graph::Graph;

fn cycles_of(files: &[(&str, &str)]) -> Vec<Vec<String>> {
    let files: BTreeMap<String, String> = files
        .iter()
        .map(|&(p, s)| (p.to_string(), s.to_string()))
        .collect();
    Graph::build(&files).cycles(&[])
}

#[test]
fn checker_finds_a_cycle_between_siblings() {
    let cycles = cycles_of(&[
        ("lib.rs", "mod a; pub mod b;"),
        ("a.rs", "use crate::b::X; pub fn g() {}"),
        ("b.rs", "pub struct X; fn f() { crate::a::g() }"),
    ]);
    assert_eq!(cycles, vec![vec!["a.rs".to_string(), "b.rs".to_string()]]);
}

#[test]
fn checker_allows_a_parent_and_its_child() {
    let cycles = cycles_of(&[
        ("lib.rs", "pub mod p;"),
        ("p/mod.rs", "mod c;\npub use c::X;\npub struct Y;"),
        ("p/c.rs", "use super::Y;\npub struct X(Y);"),
    ]);
    assert!(cycles.is_empty(), "{cycles:?}");
}

#[test]
fn checker_follows_grouped_uses_and_module_bindings() {
    let cycles = cycles_of(&[
        ("lib.rs", "mod a; mod b; mod c; mod d;"),
        (
            "a.rs",
            "use crate::{b, c::{D, e::{self as ee}}};\nfn h() { b::g(); }",
        ),
        ("b.rs", "use crate::a;\npub fn g() { a::x(); }"),
        ("c.rs", "pub mod e;\npub struct D;"),
        ("c/e.rs", "fn f() { crate::d::y() }"),
        (
            "d.rs",
            "pub fn y() { let _ = \"crate::c\"; } // crate::c::D",
        ),
    ]);
    assert_eq!(cycles, vec![vec!["a.rs".to_string(), "b.rs".to_string()]]);
}

#[test]
fn checker_allows_a_cycle_through_the_enclosing_module() {
    // b -> c -> p (their parent's file) -> b, and p -> q/r -> p (a grandchild).
    let cycles = cycles_of(&[
        ("lib.rs", "mod p;"),
        (
            "p/mod.rs",
            "mod b; mod c; mod q;\npub use b::B;\npub struct P;\nfn f() { q::r::g() }",
        ),
        ("p/b.rs", "use super::c::C;\npub struct B;"),
        ("p/c.rs", "use super::P;\npub struct C;"),
        ("p/q.rs", "pub mod r;"),
        ("p/q/r.rs", "use crate::p::P;\npub fn g() {}"),
    ]);
    assert!(cycles.is_empty(), "{cycles:?}");
}

#[test]
fn checker_finds_a_cycle_through_a_parent() {
    // y -> x/c -> x (its parent, allowed alone) -> y: a cycle all the same.
    let cycles = cycles_of(&[
        ("lib.rs", "mod x; mod y;"),
        ("x/mod.rs", "pub mod c;\nuse crate::y::W;\npub struct Z;"),
        ("x/c.rs", "use super::Z;"),
        ("y.rs", "pub struct W;\nfn f() { let _ = crate::x::c::Q; }"),
    ]);
    assert_eq!(
        cycles,
        vec![vec![
            "x/c.rs".to_string(),
            "x/mod.rs".to_string(),
            "y.rs".to_string()
        ]]
    );
}

#[test]
fn checker_resolves_path_attributes_inline_modules_and_globs() {
    let cycles = cycles_of(&[
        ("lib.rs", "pub mod t; mod u;"),
        (
            "t.rs",
            "pub mod s;\npub struct R;\n#[cfg(test)]\nmod tests { use super::*; fn f() { s::x(); } }",
        ),
        (
            "t/s.rs",
            "use super::R;\npub fn x() {}\n#[cfg(test)]\n#[path = \"s_tests.rs\"]\nmod tests;",
        ),
        ("t/s_tests.rs", "use super::*;\nfn t() { crate::u::v(); }"),
        ("u.rs", "pub fn v() { let c = 'x'; let l: &'static str = r#\"t::s\"#; }"),
    ]);
    assert!(cycles.is_empty(), "{cycles:?}");
    let files: BTreeMap<String, String> = [
        ("lib.rs", "pub mod t;"),
        ("t.rs", "pub mod s; pub struct R;"),
        ("t/s.rs", "#[path = \"s_tests.rs\"]\nmod tests;"),
        ("t/s_tests.rs", "use crate::t::R;"),
    ]
    .iter()
    .map(|&(p, s)| (p.to_string(), s.to_string()))
    .collect();
    let g = Graph::build(&files);
    assert!(g
        .edges
        .contains_key(&("t/s_tests.rs".into(), "t.rs".into())));
    let (s, s_tests) = (g.root_of("t/s.rs"), g.root_of("t/s_tests.rs").unwrap());
    assert_eq!(g.modules[s_tests].parent, s);
}
