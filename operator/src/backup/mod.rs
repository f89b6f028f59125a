//! Backups and restores that are proven restorable.
//!
//! The pure core — [`manifest`] (the commit marker, signed), [`retention`] (GFS with floors),
//! [`archive`] (tar judged entry by entry), [`paths`] — and the engine that drives it:
//! [`engine`] (runs, catalog, pruning) and [`restore`] (checks, drills, restores), over a
//! [`source`] and a [`store`]. The same engine serves the operator, `nova backup` and a host's
//! own timer. docs/backups.md explains the model.

pub mod archive;
pub mod cli;
pub mod controller;
pub mod crypt;
pub mod cycle;
pub mod engine;
pub mod hostcli;
pub mod hostctl;
pub mod jobs;
pub mod manifest;
pub mod metrics;
pub mod objectives;
pub mod pack;
pub mod parts;
pub mod paths;
pub mod pg;
pub mod progress;
pub mod restore;
pub mod restorer;
pub mod retention;
pub mod s3;
pub mod schedule;
pub mod source;
pub mod store;
pub mod tap;
pub mod timer;
pub mod volume;
