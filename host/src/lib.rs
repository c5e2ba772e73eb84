//! placerd: a WebAssembly-pluggable placement engine.
//!
//! An HTTP reverse proxy in front of a pool of runners. For every call it asks a *placer*,
//! a sandboxed WebAssembly component implementing `wit/placer.wit`, to order the runners,
//! then tries them in that order. The host owns everything that must never be left to
//! plug-in code: deadlines, retries, runner I/O and the at-most-once rule; placers own one
//! pure decision.
//!
//! # Layout
//! - [`placer`]: the wasmtime engine, loading and validating placer components, the pool of
//!   warm instances, the sandbox (epoch budget, memory cap, no WASI capabilities), output
//!   sanitising, fallback and quarantine. The built-in placers are embedded here.
//! - [`runner`]: the runner set a placer orders.
//! - `main.rs`: the command line (`placerd check`).

#![forbid(unsafe_code)]

pub mod placer;
pub mod runner;
