//! Klio API service: a Kubernetes aggregated API server that shows the Klio backup catalog as
//! `kliobackups.kliocatalog.enterprisedb.io/v1alpha1` objects.
//!
//! Modules, one responsibility each:
//! * [`config`]: the command line and environment;
//! * [`catalog`]: the Klio catalog client, the merged snapshot, and the reference catalog server;
//! * [`api`]: discovery, the resource handlers, Tables, Status errors, OpenAPI publishing;
//! * [`model`] and [`routes`]: generated from `openapi/` by build.rs;
//! * [`auth`] and [`kube`]: delegated authentication and authorization, the kube-apiserver client;
//! * [`tls`], [`pki`], [`server`]: TLS serving, certificates, the HTTPS accept loop;
//! * [`memory`]: giving memory back to the system after bursts;
//! * [`upstream_tls`]: TLS of the blocking clients (Klio servers, kube-apiserver);
//! * [`apiserver`] and [`demo`]: the entry points.

// The tests, the docs generator and the bench build on this library: every public item says
// what it is for.
#![warn(missing_docs)]

pub mod api;
pub mod apiserver;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod kube;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod routes;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod upstream_tls;
