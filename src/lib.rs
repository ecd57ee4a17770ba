//! torii: a caching reverse proxy and load balancer.
//!
//! # Layout
//!
//! A request flows one way; each step is a module with one job:
//!
//! ```text
//! listener (accept, workers, timeouts, drain)  -> src/listener/
//!   -> PROXY protocol header (v1, v2)          -> src/listener/proxy_protocol.rs
//!   -> TLS (rustls: SNI, ALPN, resumption)     -> src/listener/tls.rs
//!      client certificate, parsed once (mTLS)  -> src/client_cert.rs
//!      ACME certificates, challenges          -> src/acme/
//!   -> downstream HTTP/1.1 & HTTP/2 (hyper)    -> src/listener/conn.rs
//!      (what a connection is doing)            -> src/connection.rs
//!      HTTP/2: one write per turn, streams     -> src/listener/coalesce.rs,
//!        polled in place (a hit: no task)         src/listener/exec.rs
//!   -> proxy::handle: the whole path           -> src/proxy/mod.rs
//!      client identity (trusted proxies)      -> src/identity.rs
//!      admit (sync: answers hits at once)
//!        limits (framing, Host, sizes)         -> src/limits/
//!        route (host + path -> route)          -> src/route/
//!        auth (basic, forward; typed Decision) -> src/auth/
//!        cache (lookup, coalesce, store, purge)  -> src/cache/, src/proxy/cached.rs
//!          memory -> disk -> shared (Redis)    -> src/cache/tier/
//!        upstream (pick, queue, retry)         -> src/upstream/
//!          keep-alive pool per server, h1/h2   -> src/upstream/pool.rs, src/upstream/h1/
//!          connect: TCP or TLS, h1 / h2 / h2c  -> src/upstream/connect.rs
//!        response (hop-by-hop, Via)            -> src/proxy/mod.rs, src/body.rs
//!        observe (access log at body end)      -> src/observe/
//! admin listener (metrics, status page, purge)  -> src/admin/
//! torii top (terminal view of /stats.json)     -> src/top.rs
//! config: TOML -> file -> validate -> model    -> src/config/
//!   ${VAR} and include, merged before validate -> src/config/{env,expand,include}.rs
//!   certificates read and checked at load      -> src/config/tls.rs
//! errors -> responses                          -> src/error.rs
//! request field lookups by scan (small maps)   -> src/header_scan.rs
//! runtime state (generation, shared handles) -> src/runtime.rs
//! server: builds and wires it, reload, drain  -> src/server.rs
//! process: workers, signals                    -> src/process.rs
//!   upgrade, one owner per address, pid file, systemd -> src/lifecycle/
//! ```
//!
//! No import cycles between files: see docs/ARCHITECTURE.md and tests/architecture/.
#![forbid(unsafe_code)]

pub mod acme;
pub mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod cli;
pub mod client_cert;
pub mod compress;
pub mod config;
pub mod connection;
pub mod demo;
pub mod error;
pub mod header_scan;
pub mod identity;
pub mod lifecycle;
pub mod limits;
pub mod listener;
pub mod observe;
pub mod process;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod server;
pub mod top;
pub mod upstream;

pub use server::{run, Server};
