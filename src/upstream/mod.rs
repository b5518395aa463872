//! What Klio servers hold and how the service reads it: Klio's backup record ([`record`]) and
//! Kopia's repository protocol ([`kopia`]), through which a Klio server exposes its catalog.
//! Nothing here knows about the Kubernetes API; the [`crate::catalog`] consumes it.

pub mod kopia;
pub mod record;
