//! SEE-PTO, the predictive task orchestrator: service metadata, request traces and their
//! history, next-request predictors (count-based baselines and learned candle-nn models),
//! their training and their evaluation.
//!
//! The online path uses [`predict::Predictor`] on a [`predict::SessionContext`],
//! loads a trained model with [`nn::load_predictor`] (or [`nn::load_or_fallback`]), expands
//! a predicted request type into tasks and resources with [`metadata::ServiceCatalogue`], and
//! records what happened with [`history::History`]. [`online::Orchestrator`] puts these
//! together for the prefetch backend (policy, metrics, the origin model and a replay
//! simulation), and [`audit`] keeps the hash-chained audit log.

#![warn(missing_docs)]

pub use see_audit as audit;
pub mod catalogue_toml;
pub mod context;
pub mod eval;
pub mod faas;
pub mod generate;
pub mod history;
pub mod import;
pub mod metadata;
pub mod names;
pub mod nn;
pub mod online;
pub mod plot;
pub mod predict;
pub mod protocol;
pub mod split;
pub mod trace;
pub mod vocab;
mod wire_serde;
